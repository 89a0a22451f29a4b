"""
Typed access to ``IReactorTime`` and ``IDelayedCall``.

zope.interface declares interface methods without ``self``, so mypy (without
a zope plugin) mis-binds their first argument.  A Protocol for the clock and
one cast for the delayed call keep that workaround in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

from twisted.internet.interfaces import IDelayedCall


class ReactorTime(Protocol):
    """
    The part of ``IReactorTime`` the timeouts use, as a Protocol so the
    reactor, ``task.Clock`` and fsmcancel's operation clock all type-check.
    """

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall: ...


class Timer(Protocol):
    """The part of ``IDelayedCall`` a guard uses."""

    def cancel(self) -> None: ...


def seconds_of(clock: ReactorTime) -> Callable[[], float]:
    """The clock's ``seconds`` method, bound once (it is called per chunk)."""
    return clock.seconds


def call_later(clock: ReactorTime, delay: float, f: Callable[..., object], *args: object) -> Timer:
    """``clock.callLater(delay, f, *args)``."""
    return cast(Timer, cast(Any, clock).callLater(delay, f, *args))
