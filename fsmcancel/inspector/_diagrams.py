"""
The inspector's diagrams: one per (machine, current state), made once.

A page lists every live operation with its machine's diagram and its state
highlighted.  Running Graphviz per operation per refresh would cost tens of
milliseconds each, so each (machine, state) pair is drawn once and cached,
and drawn without blocking the reactor: ``dot`` runs as a child process
(``spawnProcess``) while the reactor goes on serving everything else.

The SVG is inlined in the page, so it is parsed and written out again
before it is: comments, scripts, event handlers and links are dropped,
element ids get a prefix of their own (so two diagrams on one page do not
share ids), and the node of the current state gets the class ``current``.
Where Graphviz is missing (or fails), a plain-text view of the machine is
shown instead.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import count
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from fsmcancel.core import MachineSpec
from fsmcancel.diagram import GraphvizNotFound, find_dot, render

_SVG = "http://www.w3.org/2000/svg"
_DROPPED = {f"{{{_SVG}}}{tag}" for tag in ("script", "foreignObject", "a", "style")}
_ids = count(1)


@dataclass(frozen=True)
class Diagram:
    """
    A diagram ready to be put in a page: ``markup`` is safe HTML (an inline
    ``<svg>``, or a ``<pre>`` text view); ``note`` says why there is no SVG.
    """

    markup: str
    svg: bool
    note: str = ""


Key = tuple[MachineSpec, str]


class DiagramCache:
    """
    Diagrams by (machine, state), at most ``size`` of them, least recently
    used dropped first.
    """

    def __init__(self, reactor: Any, size: int = 256) -> None:
        self._reactor = reactor
        self._size = size
        self._done: OrderedDict[Key, Diagram] = OrderedDict()
        self._drawing: dict[Key, Deferred[Diagram]] = {}

    def get(self, spec: MachineSpec, state: str) -> Diagram:
        """
        The diagram of ``spec`` with ``state`` highlighted; call `ready`
        first, or get the text view.
        """
        key = (spec, state)
        found = self._done.get(key)
        if found is None:
            return Diagram(text_view(spec, state), svg=False)
        self._done.move_to_end(key)
        return found

    def ready(self, keys: Iterable[Key]) -> Deferred[None]:
        """
        Fires when every diagram of ``keys`` has been drawn (as SVG, or as
        text if Graphviz is missing or fails).  Never fails.
        """
        waits = [self._draw(key) for key in dict.fromkeys(keys) if key not in self._done]
        if not waits:
            return succeed(None)
        return gatherResults(waits).addCallback(lambda _: None)

    def _draw(self, key: Key) -> Deferred[Diagram]:
        drawing = self._drawing.get(key)
        if drawing is None:
            drawing = self._drawing[key] = _svg_diagram(self._reactor, *key)
            drawing.addCallback(self._store, key)
        # Each waiter gets its own Deferred: the shared one keeps its result.
        mine: Deferred[Diagram] = Deferred()
        drawing.addCallback(_chain, mine)
        return mine

    def _store(self, diagram: Diagram, key: Key) -> Diagram:
        del self._drawing[key]
        self._done[key] = diagram
        while len(self._done) > self._size:
            self._done.popitem(last=False)
        return diagram


def _chain(diagram: Diagram, mine: Deferred[Diagram]) -> Diagram:
    mine.callback(diagram)
    return diagram


def _svg_diagram(reactor: Any, spec: MachineSpec, state: str) -> Deferred[Diagram]:
    """
    Draw with ``dot`` in a child process; the text view if that cannot be
    done, with a note saying why.
    """

    def text(note: str) -> Diagram:
        return Diagram(text_view(spec, state), svg=False, note=note)

    try:
        dot = find_dot()
        source = render(spec, "dot", highlight=state).encode("utf-8")
        done: Deferred[bytes] = Deferred()
        reactor.spawnProcess(_Dot(source, done), dot, [dot, "-Tsvg"], env={})
    except GraphvizNotFound:
        return succeed(text("Graphviz is not installed"))
    except Exception as e:
        return succeed(text(f"cannot draw it: {e}"))

    def drawn(svg: bytes) -> Diagram:
        try:
            return Diagram(clean_svg(svg.decode("utf-8"), state), svg=True)
        except (ET.ParseError, UnicodeDecodeError) as e:
            return text(f"Graphviz wrote unreadable SVG: {e}")

    def failed(reason: Failure) -> Diagram:
        return text(f"Graphviz failed: {reason.getErrorMessage()}")

    return done.addCallbacks(drawn, failed)


class _Dot(ProcessProtocol):
    """
    ``dot -Tsvg``: the DOT source on its stdin, the SVG from its stdout.

    Done when dot has closed both its stdout and its stderr, not when its
    exit has been reaped: reaping relies on a SIGCHLD handler that only a
    running reactor installs, and a truncated or failed run shows in the
    output anyway (no parseable SVG, and a message on stderr).
    """

    def __init__(self, source: bytes, done: Deferred[bytes]) -> None:
        self.source = source
        self.done = done
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.open = 2

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.source)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def outConnectionLost(self) -> None:
        self._closed()

    def errConnectionLost(self) -> None:
        self._closed()

    def _closed(self) -> None:
        self.open -= 1
        if self.open:
            return
        out = b"".join(self.out)
        if out.rstrip().endswith(b"</svg>"):
            self.done.callback(out)
        else:
            message = b"".join(self.err).decode("utf-8", "replace").strip()
            self.done.errback(RuntimeError(message or "no SVG written"))


def clean_svg(svg: str, state: str) -> str:
    """
    Graphviz's SVG, made safe to inline: parsed and written out again (so
    nothing in it can close an element early), without comments, scripts,
    event handlers, links, foreign content or namespaced attributes; ids
    prefixed; the node titled ``state`` marked ``class="node current"``.
    """
    root = ET.fromstring(svg)
    prefix = f"fsm{next(_ids)}-"
    for parent in root.iter():
        for child in list(parent):
            if child.tag in _DROPPED:
                parent.remove(child)
    for element in root.iter():
        if element.get("class") == "node":
            title = element.find(f"{{{_SVG}}}title")
            if title is not None and title.text == state:
                element.set("class", "node current")
        if "id" in element.attrib:
            element.set("id", prefix + element.attrib["id"])
    root.set("class", "diagram")
    root.set("xmlns", _SVG)
    return _markup(root)


def _markup(element: ET.Element) -> str:
    """
    ``element`` as HTML-embeddable SVG markup, everything escaped.  (Not
    ``ET.tostring``: it cannot write a default namespace with unqualified
    attributes without a process-wide ``register_namespace``.)
    """
    tag = element.tag.rpartition("}")[2]
    attrs = "".join(
        f' {name}="{html.escape(value, quote=True)}"'
        for name, value in element.attrib.items()
        if "}" not in name and not name.lower().startswith("on")
    )
    inner = html.escape(element.text or "", quote=False)
    for child in element:
        inner += _markup(child) + html.escape(child.tail or "", quote=False)
    return f"<{tag}{attrs}>{inner}</{tag}>"


def text_view(spec: MachineSpec, state: str) -> str:
    """
    A readable plain-text view of ``spec``, escaped for HTML: each state
    with its kind and resources, then its transitions; the current state
    marked with an arrow and ``<mark>``.
    """
    lines = [f"<b>{html.escape(spec.name)}</b>"]
    for s in spec.states:
        notes = []
        if s.name == spec.initial:
            notes.append("initial")
        if s.kind != "running":
            notes.append(s.kind)
        head = s.name + (f" ({', '.join(notes)})" if notes else "")
        if s.resources:
            head += "   owns: " + ", ".join(s.resources)
        marker = "\u25b6 " if s.name == state else "  "
        line = html.escape(marker + head)
        if s.name == state:
            line = f'<mark class="current">{line}</mark>'
        lines.append(line)
        for t in spec.transitions:
            if t.source != s.name or t.automatic:
                continue
            arrow = f"      {t.input} \u2192 {t.target}"
            if t.output is not None and t.output != t.input:
                arrow += f"  ({t.output})"
            lines.append(html.escape(arrow))
    return '<pre class="diagram text">' + "\n".join(lines) + "</pre>"
