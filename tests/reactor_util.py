"""
Drive the global reactor from a test, and check that nothing was left behind.

The reactor is never ``run()``: a test iterates it (``reactor.iterate``) until
what it waits for has happened, with a deadline.  Waiting on a Deferred or a
condition this way is synchronisation, not a sleep: each iteration returns as
soon as the reactor has something to do, and the deadline only bounds a test
that would otherwise hang.

`Snapshot` records what the process holds (file descriptors, reactor readers
and writers, delayed calls) so a test can assert, once everything it started
has finished and the reactor has processed the pending disconnects, that all
of it is back to where it was.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

#: The global reactor, untyped (its interfaces do not type-check as classes
#: without the zope plugin).
reactor: Any = _reactor

T = TypeVar("T")

#: How long one ``reactor.iterate`` may block when nothing happens.
STEP = 0.01
#: A delayed call due within this many seconds is "due now": settling waits
#: for it instead of reporting it.
DUE_NOW = 0.001


class ReactorTimeout(AssertionError):
    """What a test waited for did not happen before its deadline."""


def iterate_until(
    done: Callable[[], bool], timeout: float = 10.0, what: str | Callable[[], str] = ""
) -> float:
    """
    Iterate the reactor until ``done()`` is true; return the seconds it took.
    Raise `ReactorTimeout` if it is still false after ``timeout`` seconds.
    """
    start = time.monotonic()
    deadline = start + timeout
    while not done():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise ReactorTimeout(f"not done after {timeout}s: {said or done!r}")
        reactor.iterate(STEP)
    return time.monotonic() - start


def outcome_of(d: Deferred[Any], timeout: float = 10.0) -> object:
    """
    Iterate the reactor until ``d`` fires; return its result, or the
    `Failure` it failed with (returned, not raised: the failure is consumed).
    """
    fired: list[object] = []
    d.addBoth(fired.append)
    iterate_until(lambda: bool(fired), timeout, f"{d!r} to fire")
    return fired[0]


def run_until(d: Deferred[T], timeout: float = 10.0) -> T:
    """
    Iterate the reactor until ``d`` fires; return its result or raise its
    failure.
    """
    result = outcome_of(d, timeout)
    if isinstance(result, Failure):
        result.raiseException()
    return result  # type: ignore[return-value]


def open_fds() -> dict[int, str]:
    """The process's open file descriptors and what each points to."""
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        # The listing's own descriptor is closed by now: skip it.
        with contextlib.suppress(OSError):
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def active_delayed_calls() -> list[Any]:
    return [c for c in reactor.getDelayedCalls() if c.active()]


def describe_calls(calls: Iterable[Any]) -> str:
    return "; ".join(f"{c.func!r} in {c.getTime() - reactor.seconds():.3f}s" for c in calls)


@dataclass
class Leftovers:
    """What a process holds now that it did not hold at the snapshot."""

    fds: dict[int, str]
    readers: list[Any]
    writers: list[Any]
    calls: list[Any]

    def __bool__(self) -> bool:
        return bool(self.fds or self.readers or self.writers or self.calls)

    def __str__(self) -> str:
        parts = []
        if self.fds:
            parts.append(f"file descriptors {self.fds}")
        if self.readers:
            parts.append(f"reactor readers {self.readers}")
        if self.writers:
            parts.append(f"reactor writers {self.writers}")
        if self.calls:
            parts.append(f"delayed calls [{describe_calls(self.calls)}]")
        return ", ".join(parts) or "nothing"


class Snapshot:
    """
    File descriptors, reactor readers and writers and delayed calls, as they
    are now; `leftovers` lists what is held later that was not held now.
    """

    def __init__(self) -> None:
        self.fds = open_fds()
        self.readers = set(reactor.getReaders())
        self.writers = set(reactor.getWriters())
        self.calls = set(active_delayed_calls())

    def leftovers(self, ignore_calls: Iterable[Any] = ()) -> Leftovers:
        ignored = set(ignore_calls)
        fds = open_fds()
        new_fds = {fd: target for fd, target in fds.items() if self.fds.get(fd) != target}
        return Leftovers(
            fds=new_fds,
            readers=[r for r in reactor.getReaders() if r not in self.readers],
            writers=[w for w in reactor.getWriters() if w not in self.writers],
            calls=[c for c in active_delayed_calls() if c not in self.calls and c not in ignored],
        )

    def assert_clean(self, timeout: float = 10.0, ignore_calls: Iterable[Any] = ()) -> float:
        """
        Let the reactor process pending disconnects (an abort closes on the
        next iteration, the peer notices one later) until no file descriptor,
        reader or writer is left over, and the delayed calls due at once
        (``callLater(0, ...)``) have run; then fail, naming them, if anything
        is still left: a timer armed for later counts even though it would
        expire by itself.  Returns the seconds it took to settle.
        """
        ignored = list(ignore_calls)

        def settled() -> bool:
            left = self.leftovers(ignored)
            due = reactor.seconds() + DUE_NOW
            return not (
                left.fds
                or left.readers
                or left.writers
                or any(c.getTime() <= due for c in left.calls)
            )

        try:
            took = iterate_until(settled, timeout)
        except ReactorTimeout:
            raise AssertionError(f"left behind: {self.leftovers(ignored)}") from None
        left = self.leftovers(ignored)
        if left:
            raise AssertionError(f"left behind: {left}")
        return took


_warm = False


def warm_up() -> None:
    """
    Make the process-wide allocations Twisted does once, lazily, before a
    `Snapshot`: the first ``listenTCP`` reserves a file descriptor (on
    ``/dev/null``) to recover from EMFILE, and keeps it for good.
    """
    global _warm
    if _warm:
        return
    from twisted.internet.protocol import Factory, Protocol

    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    run_until(port.stopListening())
    _warm = True
