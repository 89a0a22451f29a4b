"""
Storage servers as a test drives them, under a ``task.Clock``: what the
share finder's machines see of the network, through the same `Exchange`
interface `examples.share_protocol.StorageExchange` gives them.

Each request opens a `FakeExchange`; the test answers it, breaks it or
lets it stall.  A connection is open from ``answer()`` until the server
ends it (a final answer, a break) or a drop the client asked for takes
effect: one clock turn later (``callLater(0)``), as an aborted socket
closes on the reactor's next iteration.  `World` counts open connections,
so a test can check the cap from the client's side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from examples.share_machines import TIMEOUTS, Search
from examples.share_protocol import Answer, Holdings, Request, ServerError, ShareHeader
from fsmcancel.timeouts import Timeouts, load_config


def share(n: int) -> bytes:
    return f"share {n};".encode() * (n + 1)


@dataclass(eq=False)
class FakeExchange:
    world: World
    request: Request
    progress: Callable[[], object] | None = None
    last: float = 0.0
    answer_d: Deferred[Answer] | None = None
    body_d: Deferred[bytes] | None = None
    open: bool = False
    dropped: bool = False
    succeeded: bool = False  # the server gave what was asked for
    closing: list[Deferred[None]] = field(default_factory=list)

    # -- what the machines call

    def answer(self) -> Deferred[Answer]:
        self.open = True
        self.world.opened(self)
        self.last = self.world.clock.seconds()
        self.answer_d = Deferred(lambda _: self._drop())
        return self.answer_d

    def body(self) -> Deferred[bytes]:
        self.body_d = Deferred(lambda _: self._drop())
        return self.body_d

    def close(self) -> Deferred[None]:
        if not self.open:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.closing.append(d)
        self._drop()
        return d

    # -- what the test does, as the server

    @property
    def pending(self) -> Deferred[Any] | None:
        """The Deferred the client waits on, if it still waits."""
        for d in (self.body_d, self.answer_d):
            if d is not None and not d.called:
                return d
        return None

    def reply(self, answer: Answer) -> None:
        assert self.answer_d is not None
        self.last = self.world.clock.seconds()
        self.succeeded = isinstance(answer, Holdings)
        self.answer_d.callback(answer)

    def deliver(self, data: bytes) -> None:
        """The body, then the server closes."""
        assert self.body_d is not None
        self.chunk()
        self._closed()
        self.succeeded = True
        self.body_d.callback(data)

    def chunk(self) -> None:
        self.last = self.world.clock.seconds()
        if self.progress is not None:
            self.progress()

    def fail(self, what: str) -> None:
        """The server breaks the request (a NONE, garbage, a reset...)."""
        d = self.pending
        assert d is not None
        self._closed()
        d.errback(ServerError(what))

    def honest(self) -> None:
        """Answer as the world's truth says (holdings, share, NONE)."""
        held = self.world.holdings[self.request.server]
        n = self.request.share
        if n is None:  # the protocol allows only share numbers below K
            self.reply(Holdings(frozenset(h for h in held if h < self.world.k)))
        elif n not in held:
            self.fail(f"NONE: does not hold share {n}")
        elif self.body_d is None:
            self.reply(ShareHeader(len(share(n))))
        else:
            self.deliver(share(n))

    # -- the socket

    def _drop(self) -> None:
        if self.open and not self.dropped:
            self.dropped = True
            if self.world.synchronous:
                self._closed()
            else:
                self.world.clock.callLater(0, self._closed)

    def _closed(self) -> None:
        if self.open:
            self.open = False
            self.world.sockets -= 1
        closing, self.closing = self.closing, []
        for d in closing:
            d.callback(None)


@dataclass(eq=False)
class World:
    """
    Servers ``s0``, ``s1``... holding the shares in ``holdings``; every
    exchange the machines opened, in order; open sockets now and at most.
    """

    holdings: dict[str, set[int]]
    clock: Clock = field(default_factory=Clock)
    synchronous: bool = False
    k: int = 0
    exchanges: list[FakeExchange] = field(default_factory=list)
    sockets: int = 0
    most: int = 0

    def connect(self, request: Request) -> FakeExchange:
        exchange = FakeExchange(self, request)
        self.exchanges.append(exchange)
        return exchange

    def opened(self, exchange: FakeExchange) -> None:
        self.sockets += 1
        self.most = max(self.most, self.sockets)

    def waiting(self) -> list[FakeExchange]:
        """The exchanges whose client still waits for the server."""
        return [e for e in self.exchanges if e.open and not e.dropped and e.pending is not None]

    def search(self, k: int, concurrency: int = 10) -> Search:
        self.k = k
        timeouts = Timeouts(load_config(TIMEOUTS, env={}), clock=self.clock)
        return Search("si", k, list(self.holdings), concurrency, timeouts, self.connect)


def world(*holdings: set[int], synchronous: bool = False) -> World:
    return World({f"s{i}": set(h) for i, h in enumerate(holdings)}, synchronous=synchronous)
