"""
Time, as fsmcancel sees it: the part of ``IReactorTime`` it uses.

Every timer an operation arms (``op.call_later``, the cleanup grace, the
timeouts' guards) goes through an injected clock, so that tests run under
``twisted.internet.task.Clock`` and production under the reactor.  Spelled
as a Protocol so that both type-check without the zope plugin; this is its
only definition.

Owns: the ``ReactorTime`` type.  Must not touch: the reactor, except to
return it as the default clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall


class ReactorTime(Protocol):
    """
    ``seconds()`` and ``callLater()``: what fsmcancel needs of a clock.
    """

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall: ...


def default_clock() -> ReactorTime:
    """
    The global reactor, imported only when no clock was given (importing it
    installs the default reactor, which an application may not want yet).
    """
    from twisted.internet import reactor

    clock: ReactorTime = reactor
    return clock
