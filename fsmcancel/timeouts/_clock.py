"""
Typed access to ``IReactorTime`` and ``IDelayedCall`` for the timeouts.

The clock is the core's `ReactorTime` (one definition, in
``fsmcancel.core._clock``).  zope.interface declares interface methods
without ``self``, so mypy (without a zope plugin) mis-binds their first
argument; one cast for the delayed call keeps that workaround here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

from fsmcancel.core._clock import ReactorTime

__all__ = ["ReactorTime", "Timer", "call_later", "seconds_of"]


class Timer(Protocol):
    """The part of ``IDelayedCall`` a guard uses."""

    def cancel(self) -> None: ...

    def reset(self, secondsFromNow: float) -> None: ...


def seconds_of(clock: ReactorTime) -> Callable[[], float]:
    """The clock's ``seconds`` method, bound once (it is called per chunk)."""
    return clock.seconds


def call_later(clock: ReactorTime, delay: float, f: Callable[..., object], *args: object) -> Timer:
    """``clock.callLater(delay, f, *args)``."""
    return cast(Timer, cast(Any, clock).callLater(delay, f, *args))
