"""
A live inspector page for the operations of a running program.

``Registry.describe()`` says what is live, and ``diagram.render(op)`` can
draw an operation's machine with its current state highlighted, but a
person debugging a stuck service wants to look, not to call functions.
`Inspector` is a ``twisted.web`` resource that shows them:

``GET /``
    An HTML page listing the live operations (id, machine, state, time in
    state, resources held), each with its machine's diagram and its state
    highlighted: SVG when Graphviz is installed, a text view when not.  It
    refreshes itself, and loads nothing from anywhere.
``GET /operations.json``
    The same data, as JSON.
``GET /operations/<id>``
    One operation with its recent transitions (kept when the registry was
    created with ``Registry(history=N)``): an HTML page for a browser
    (whose ``Accept`` asks for ``text/html``), JSON otherwise, and always
    JSON at ``/operations/<id>.json``.  An id that is not live is a 404
    saying so.

`listen_inspector` serves it on 127.0.0.1 by default: it is a debugging
page, and what operations hold (peer addresses, file names) is nobody
else's business.  Bound to a loopback address, it also refuses requests
whose ``Host`` is not a loopback name, so a web page cannot reach it through
DNS rebinding.
"""

from fsmcancel.inspector._resource import LOOPBACK_HOSTS, Inspector, listen_inspector

__all__ = ["LOOPBACK_HOSTS", "Inspector", "listen_inspector"]
