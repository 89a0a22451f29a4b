"""
In-process faulty peers on 127.0.0.1, and a generic operation that calls them.

Peers
-----
`FaultyServer` listens on 127.0.0.1 (port 0) and answers each connection
according to its ``mode``, in one of three wire formats:

``line``
    The generic operation's protocol.  The client sends ``GET <name>\\r\\n``;
    the server answers ``OK <length>\\r\\n`` and then ``<length>`` bytes of
    body, possibly in several chunks, and leaves the connection open for the
    client to close.
``http``
    HTTP/1.1: after the request head, ``200 OK`` with ``Content-Length`` and
    ``Connection: close``, the body, then the server closes.
``poetry``
    The poetry protocol of ``examples.poetry_proxy``: no request; the poem is
    sent as soon as a client connects, then the server closes.

Modes (`MODES`):

``healthy``
    The head with the first chunk after ``think`` seconds, further chunks
    ``interval`` apart.
``trickle``
    The same code path, slowloris-style: a small chunk every ``interval``
    seconds for much longer than any idle timeout; alive, never stalled.
``silent``
    Accepts (and reads the request), never answers, never closes.
``stall``
    The head and the first chunk, then nothing, connection left open.
``reset``
    The head and half the body, then ``abortConnection`` (SO_LINGER 0: the
    client sees a reset).
``truncated``
    The head announcing the full length, half the body, then a clean close.
``garbage``
    Bytes that are not a response, connection left open.

`FaultyServer.go_silent` (or ``silent_after``, a number of requests)
switches a healthy server to silent mid-run: new requests get no answer and
streams in flight stop sending.
`closed_port` gives a port on 127.0.0.1 nobody listens on (bound, then
closed), to be refused.

The server counts connections made and lost, so a test can check that it saw
every connection closed.  Its timers die with their connection.

The generic operation
---------------------
`fetch_machine` (``fsmcancel diagram tests.faulty_peers``): fetch one named
body over the ``line`` protocol from a list of peers, trying the next peer
once the current one fails, stalls or refuses, until none is left.

``idle``
    Nothing yet.
``connecting`` (owns: the connect call)
    A guarded call (kind ``connect``) around ``endpoint.connect``; a refused
    or failed connect, or a connect timeout, tries the next peer (a loop), and
    ``exhausted`` ends the operation with the last peer's error.
``exchanging`` (owns: the connection, the response call)
    A data state whose data is the `Exchange`.  The response is a guarded
    call (kind ``response``, the idle policy) on the client's ``finished``
    Deferred; every chunk (the header line included) is reported as
    progress, so the idle timeout measures the silence since the last byte.
    A stall, a reset, garbage or a truncated body go back to ``connecting``
    for the next peer; leaving the state cancels the call and aborts the
    connection.
``closing`` (cleanup; owns: the connection)
    The body is complete and the result recorded; the connection is closed
    politely and the operation ends when it is gone (a forced cancel aborts
    it).
``done``
    The body (success); the last peer's error: `Stalled` (carrying the
    `TimedOut`), `ProtocolError`/`TruncatedBody`, the connection error
    (``ConnectionRefusedError``, ``ConnectionLost``...); or
    ``OperationCancelled``.

Every attempt is recorded in ``FetchJob.attempts``.

Also here
---------
`Blackhole`, a port where connecting hangs; `Lab`, a test's servers and its final
checks (nothing left behind); `drive`, which runs many calls with bounded
concurrency and planned cancels; `bare_fetch`, the same exchange as the
operation with bare Deferreds (the benchmark's baseline).
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import structlog
from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure

from fsmcancel import Cancellable, Operation, OperationBuilder, Registry
from fsmcancel.timeouts import GuardedCall, TimedOut, Timeouts, load_config
from tests.reactor_util import Snapshot, iterate_until, reactor, run_until, warm_up

Wire = Literal["line", "http", "poetry"]
Mode = Literal["healthy", "trickle", "silent", "stall", "reset", "truncated", "garbage"]
MODES: tuple[Mode, ...] = (
    "healthy",
    "trickle",
    "silent",
    "stall",
    "reset",
    "truncated",
    "garbage",
)
GARBAGE = b"\x00\xff\xfeHELLO?? \x1b[31m this is not a response at all \x07\r\n\r\n"
MAX_HEAD = 64


def untyped(thing: object) -> Any:
    """
    A transport, port or endpoint as ``Any``: Twisted's interfaces do not
    type-check as classes without the zope plugin.
    """
    return thing


def body_for(name: str, size: int) -> bytes:
    """The body every healthy peer serves for ``name``: deterministic bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{name}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


# -- peers ----------------------------------------------------------------------


@dataclass
class FaultyServer:
    """
    A peer on 127.0.0.1 that answers according to ``mode`` (see the module
    docstring); ``size`` bytes of body sent in ``chunks`` pieces, the first
    after ``think`` seconds and the others ``interval`` apart.
    """

    mode: Mode = "healthy"
    wire: Wire = "line"
    size: int = 4096
    chunks: int = 4
    think: float = 0.0
    interval: float = 0.01
    silent: bool = False
    #: go silent (`go_silent`) once this many requests have been answered
    silent_after: int | None = None
    accepted: int = 0
    closed: int = 0
    requests: int = 0
    port: IListeningPort = field(init=False)
    connections: set[PeerConnection] = field(default_factory=set)

    def listen(self, backlog: int = 1024) -> FaultyServer:
        factory = protocol.Factory.forProtocol(lambda: PeerConnection(self))
        self.port = reactor.listenTCP(0, factory, backlog=backlog, interface="127.0.0.1")
        return self

    @property
    def number(self) -> int:
        return cast(int, untyped(self.port).getHost().port)

    @property
    def name(self) -> str:
        return f"{self.mode}@{self.number}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.number}"

    @property
    def open(self) -> int:
        """Connections accepted and not yet seen closed."""
        return self.accepted - self.closed

    def endpoint(self, timeout: float = 30) -> Any:
        return TCP4ClientEndpoint(reactor, "127.0.0.1", self.number, timeout=timeout)

    def peer(self) -> Peer:
        return Peer(self.name, self.endpoint())

    def go_silent(self) -> None:
        """From now on, answer nothing: new requests, and streams in flight."""
        self.silent = True
        for c in list(self.connections):
            c.stop_sending()

    def stop(self) -> Deferred[None]:
        """Stop listening and drop the connections still open (if any)."""
        for c in list(self.connections):
            c.stop_sending()
            if c.transport is not None:
                untyped(c.transport).abortConnection()
        return cast("Deferred[None]", untyped(self.port).stopListening())


class PeerConnection(protocol.Protocol):
    """One connection to a `FaultyServer`."""

    def __init__(self, server: FaultyServer) -> None:
        self.server = server
        self.buffer = b""
        self.answered = False
        self.timer: Any = None
        self.pending: list[bytes] = []
        self.then: Callable[[], object] | None = None

    def connectionMade(self) -> None:
        self.server.accepted += 1
        self.server.connections.add(self)
        if self.server.wire == "poetry":
            self.answer("poem")

    def dataReceived(self, data: bytes) -> None:
        if self.answered:
            return
        self.buffer += data
        end = b"\r\n\r\n" if self.server.wire == "http" else b"\r\n"
        if end not in self.buffer:
            return
        first = self.buffer.split(b"\r\n", 1)[0].decode("ascii", "replace")
        parts = first.split()
        self.answer(parts[1].lstrip("/") if len(parts) > 1 else "?")

    def answer(self, name: str) -> None:
        server = self.server
        self.answered = True
        server.requests += 1
        if server.silent_after is not None and server.requests > server.silent_after:
            server.go_silent()
        mode = server.mode
        if server.silent or mode == "silent":
            return
        if mode == "garbage":
            untyped(self.transport).write(GARBAGE)
            return
        body = body_for(name, server.size)
        n = max(1, server.chunks)
        step = -(-len(body) // n)
        pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
        pieces[0] = self.head(len(body)) + pieces[0]
        then: Callable[[], object] | None
        if mode == "stall":
            pieces, then = pieces[:1], None
        elif mode == "reset":
            pieces, then = pieces[: max(1, len(pieces) // 2)], self.reset
        elif mode == "truncated":
            pieces, then = pieces[: max(1, len(pieces) // 2)], self.close
        else:  # healthy, trickle
            then = self.close if server.wire != "line" else None
        self.pending = pieces
        self.then = then
        self.timer = reactor.callLater(server.think, self.send)

    def head(self, length: int) -> bytes:
        wire = self.server.wire
        if wire == "line":
            return b"OK %d\r\n" % length
        if wire == "http":
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % length
            )
        return b""

    def send(self) -> None:
        self.timer = None
        if self.server.silent or self.transport is None:
            return
        untyped(self.transport).write(self.pending.pop(0))
        if self.pending:
            self.timer = reactor.callLater(self.server.interval, self.send)
        elif self.then is not None:
            self.then()

    def reset(self) -> None:
        untyped(self.transport).abortConnection()

    def close(self) -> None:
        untyped(self.transport).loseConnection()

    def stop_sending(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.stop_sending()
        self.server.closed += 1
        self.server.connections.discard(self)


def closed_port() -> int:
    """A port on 127.0.0.1 that was just bound and closed: connecting is refused."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return cast(int, s.getsockname()[1])
    finally:
        s.close()


class Blackhole:
    """
    A port on 127.0.0.1 where connecting hangs, as to a host that vanished:
    it listens with a backlog of 0 and its one queue slot is taken, so the
    kernel drops further SYNs.  `close` when done.
    """

    def __init__(self) -> None:
        self.listening = socket.socket()
        self.listening.bind(("127.0.0.1", 0))
        self.listening.listen(0)
        self.number: int = self.listening.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.number))

    def peer(self) -> Peer:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.number)
        return Peer(f"blackhole@{self.number}", endpoint)

    def close(self) -> None:
        self.filler.close()
        self.listening.close()


def stop_all(servers: Sequence[FaultyServer]) -> Deferred[Any]:
    return DeferredList([s.stop() for s in servers], consumeErrors=True)


# -- the generic operation --------------------------------------------------------


class ProtocolError(Exception):
    """The peer sent something that is not a response."""


class TruncatedBody(ProtocolError):
    """The peer closed the connection before the whole body."""


class Stalled(Exception):
    """A guarded call was given up; ``timed_out`` says which rule fired."""

    def __init__(self, timed_out: TimedOut, received: int = 0) -> None:
        self.timed_out = timed_out
        self.received = received
        super().__init__(
            f"{timed_out.kind} call to {timed_out.peer} stalled: {timed_out.rule} "
            f"limit {timed_out.limit:.3f}s, gave up after {timed_out.waited:.3f}s "
            f"and {received} bytes"
        )


@dataclass(frozen=True)
class Peer:
    """A peer's name (for timeouts and errors) and its client endpoint."""

    name: str
    #: An ``IStreamClientEndpoint`` (untyped: Twisted's interfaces do not
    #: type-check as classes without the zope plugin).
    endpoint: Any


class FetchClient(protocol.Protocol):
    """
    The ``line`` protocol, client side.  ``finished`` fires with the body or
    fails (`ProtocolError`, `TruncatedBody`, the connection's error);
    cancelling it aborts the connection.  ``progress`` is called on every
    chunk; ``on_closed`` when the connection is gone.  `release` detaches it
    from the operation and aborts the connection.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = b""
        self.length: int | None = None
        self.chunks: list[bytes] = []
        self.received = 0
        self.detached = False
        self.progress: Callable[[], object] | None = None
        self.on_closed: Callable[[Failure], object] | None = None
        self.finished: Deferred[bytes] = Deferred(lambda _: self.abort())

    def connectionMade(self) -> None:
        untyped(self.transport).write(self.request)

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called or self.detached:
            return
        if self.length is None:
            self.buffer += data
            head, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                if len(self.buffer) > MAX_HEAD:
                    self.bad(f"no header line in the first {MAX_HEAD} bytes")
                return
            word, _, number = head.partition(b" ")
            if word != b"OK" or not number.isdigit():
                self.bad(f"bad header line {head[:MAX_HEAD]!r}")
                return
            self.length = int(number)
            self.buffer = b""
            data = rest
        if data:
            self.chunks.append(data)
            self.received += len(data)
        if self.progress is not None:
            self.progress()
        if self.received > self.length:
            self.bad(f"{self.received} bytes of body, {self.length} announced")
        elif self.received == self.length:
            self.finished.callback(b"".join(self.chunks))

    def bad(self, why: str) -> None:
        self.finished.errback(ProtocolError(why))
        self.abort()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.detached:
            return
        if not self.finished.called:
            if not reason.check(ConnectionDone):
                self.finished.errback(reason)
            elif self.length is None:
                self.finished.errback(ProtocolError("closed without answering"))
            else:
                self.finished.errback(
                    TruncatedBody(f"closed after {self.received} of {self.length} bytes")
                )
        on_closed, self.on_closed = self.on_closed, None
        if on_closed is not None:
            on_closed(reason)

    def abort(self) -> None:
        if self.transport is not None:
            untyped(self.transport).abortConnection()

    def release(self) -> None:
        self.detached = True
        self.progress = None
        self.on_closed = None
        self.abort()


def connect(peer: Peer, request: bytes) -> Deferred[FetchClient]:
    d = untyped(peer.endpoint).connect(protocol.Factory.forProtocol(lambda: FetchClient(request)))
    return cast("Deferred[FetchClient]", d)


class Fetch(Cancellable, Protocol):
    """The inputs of one fetch."""

    def start(self) -> None: ...
    def connected(self, client: FetchClient) -> None: ...
    def connect_failed(self, reason: Failure) -> None: ...
    def connect_timed_out(self, timed_out: TimedOut) -> None: ...
    def exhausted(self) -> None: ...
    def response(self, body: bytes) -> None: ...
    def response_failed(self, reason: Failure) -> None: ...
    def stalled(self, timed_out: TimedOut) -> None: ...
    def closed(self, reason: Failure) -> None: ...


@dataclass
class FetchJob:
    """The core: what to fetch, from which peers, under which timeouts."""

    name: str
    peers: list[Peer]
    timeouts: Timeouts
    next: int = 0
    current: Peer | None = None
    #: (peer, None) for the attempt that succeeded, (peer, error) for the others
    attempts: list[tuple[str, BaseException | None]] = field(default_factory=list)

    @property
    def request(self) -> bytes:
        return b"GET %s\r\n" % self.name.encode()

    def record(self, error: BaseException | Failure | None) -> None:
        assert self.current is not None
        value = error.value if isinstance(error, Failure) else error
        self.attempts.append((self.current.name, value))


FetchOp = Operation[Fetch, FetchJob]
CONNECT_KIND = "connect"
RESPONSE_KIND = "response"


@dataclass
class Exchange:
    """The data of ``exchanging``: the connection and its response call."""

    peer: Peer
    client: FetchClient
    call: GuardedCall[bytes]


def start_exchange(inputs: Fetch, op: FetchOp, client: FetchClient) -> Exchange:
    job = op.core
    assert job.current is not None
    op.own(client, FetchClient.release, name="connection")
    call = job.timeouts.call(
        op,
        lambda: client.finished,
        kind=RESPONSE_KIND,
        peer=job.current.name,
        on_result=inputs.response,
        on_failure=inputs.response_failed,
        on_timeout=inputs.stalled,
    )
    client.progress = call.progress
    return Exchange(job.current, client, call)


_builder = OperationBuilder(Fetch, FetchJob, name="fetch")
idle = _builder.state("idle")
connecting = _builder.state("connecting", resources=["connect call"])
exchanging = _builder.state("exchanging", start_exchange, resources=["connection", "response call"])
closing = _builder.cleanup_state("closing", resources=["connection"])
done = _builder.terminal_state("done")
_builder.timeout(Fetch.connect_timed_out, kind=CONNECT_KIND)
_builder.timeout(Fetch.stalled, kind=RESPONSE_KIND)


def next_peer(inputs: Fetch, op: FetchOp) -> None:
    """Connect to the next peer, or give up (``exhausted``) if none is left."""
    job = op.core
    if job.next >= len(job.peers):
        inputs.exhausted()
        return
    job.current = peer = job.peers[job.next]
    job.next += 1
    job.timeouts.call(
        op,
        connect,
        peer,
        job.request,
        kind=CONNECT_KIND,
        peer=peer.name,
        on_result=inputs.connected,
        on_failure=inputs.connect_failed,
        on_timeout=inputs.connect_timed_out,
    )


@idle.upon(Fetch.start).to(connecting)
def start(inputs: Fetch, op: FetchOp) -> None:
    next_peer(inputs, op)


connecting.upon(Fetch.connected).to(exchanging).returns(None)


@connecting.upon(Fetch.connect_failed).loop()
def connect_failed(inputs: Fetch, op: FetchOp, reason: Failure) -> None:
    op.core.record(reason)
    next_peer(inputs, op)


@connecting.upon(Fetch.connect_timed_out).loop()
def connect_timed_out(inputs: Fetch, op: FetchOp, timed_out: TimedOut) -> None:
    op.core.record(Stalled(timed_out))
    next_peer(inputs, op)


@connecting.upon(Fetch.exhausted).to(done)
def exhausted(inputs: Fetch, op: FetchOp) -> None:
    error = op.core.attempts[-1][1] if op.core.attempts else None
    op.fail(error or ProtocolError(f"{op.core.name}: no peer to fetch it from"))


@exchanging.upon(Fetch.response).to(closing)
def got_response(inputs: Fetch, op: FetchOp, exchange: Exchange, body: bytes) -> None:
    op.core.record(None)
    op.succeed(body)
    client = op.hand_over(exchange.client)
    client.on_closed = inputs.closed
    if client.transport is not None:
        untyped(client.transport).loseConnection()


@exchanging.upon(Fetch.response_failed).to(connecting)
def response_failed(inputs: Fetch, op: FetchOp, exchange: Exchange, reason: Failure) -> None:
    op.core.record(reason)
    next_peer(inputs, op)


@exchanging.upon(Fetch.stalled).to(connecting)
def stalled(inputs: Fetch, op: FetchOp, exchange: Exchange, timed_out: TimedOut) -> None:
    op.core.record(Stalled(timed_out, exchange.client.received))
    next_peer(inputs, op)


closing.upon(Fetch.closed).to(done).returns(None)
idle.upon(Fetch.cancel).to(done).returns(None)
connecting.upon(Fetch.cancel).to(done).returns(None)
exchanging.upon(Fetch.cancel).to(done).returns(None)

fetch_machine = _builder.build()


def fetch(
    name: str,
    peers: Sequence[Peer],
    timeouts: Timeouts,
    *,
    registry: Registry | None = None,
) -> FetchOp:
    """Start fetching ``name`` from ``peers``, in order."""
    op = fetch_machine(FetchJob(name, list(peers), timeouts), registry=registry)
    op.inputs.start()
    return op


def fast_timeouts(
    idle_initial: str = "500ms",
    idle_min: str = "300ms",
    idle_max: str = "1s",
    connect: str = "2s",
    deadline: str = "20s",
) -> Timeouts:
    """
    Short timeouts, so a stall is detected within a second: the response is
    guarded by the idle policy (``idle_initial`` while cold, learned within
    ``idle_min``..``idle_max``), the whole response by ``deadline``, and the
    connect by a fixed ``connect`` deadline.  No backoff, so one test's
    stalls do not slow the next call's detection.
    """
    return Timeouts(
        load_config(
            data={
                "default": {
                    "policy": "idle",
                    "backoff": 1.0,
                    "idle": {"initial": idle_initial, "min": idle_min, "max": idle_max},
                    "deadline": {"initial": deadline, "max": deadline},
                },
                "kinds": {
                    CONNECT_KIND: {
                        "policy": "fixed",
                        "deadline": {"initial": connect, "min": "10ms", "max": connect},
                    }
                },
            },
            env={},
        )
    )


# -- the lab: servers, a snapshot of the process, and the final checks ----------


class Lab:
    """
    The servers of one test, what the process held before they started, and
    fsmcancel's log events at warning and above (recorded instead of
    printed; debug events filtered out, as in production).

    Use ``with Lab.open() as lab:``; `finish` makes the final checks.
    """

    def __init__(self) -> None:
        warm_up()
        self.events: list[dict[str, Any]] = []
        self.snapshot = Snapshot()
        self.servers: list[FaultyServer] = []
        self.ports: list[IListeningPort] = []
        self.blackholes: list[Blackhole] = []
        self.registry = Registry()
        self.completions: list[list[object]] = []
        self.finished = False

    @classmethod
    @contextmanager
    def open(cls) -> Iterator[Lab]:
        lab = cls()

        def record(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
            lab.events.append(dict(event))
            raise structlog.DropEvent

        structlog.configure(
            processors=[structlog.processors.add_log_level, record],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        )
        try:
            yield lab
        finally:
            structlog.reset_defaults()
            if not lab.finished:
                lab.stop()

    def server(self, mode: Mode = "healthy", wire: Wire = "line", **kw: Any) -> FaultyServer:
        server = FaultyServer(mode, wire, **kw).listen()
        self.servers.append(server)
        return server

    def blackhole(self) -> Blackhole:
        blackhole = Blackhole()
        self.blackholes.append(blackhole)
        return blackhole

    def listen(self, factory: protocol.Factory) -> IListeningPort:
        port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.ports.append(port)
        return port

    def watch(self, op: Operation[Any, Any]) -> list[object]:
        """What ``op``'s completion fires with, as it fires (checked by `finish`)."""
        fired: list[object] = []
        op.completion.addBoth(fired.append)
        self.completions.append(fired)
        return fired

    def complete(self, op: Operation[Any, Any], timeout: float = 10.0) -> tuple[object, float]:
        """
        Wait for ``op`` to complete; return its outcome (a value or a
        `Failure`, consumed) and how long that took.
        """
        start = time.monotonic()
        fired = self.watch(op)
        iterate_until(lambda: bool(fired), timeout, f"{op} to complete")
        elapsed = time.monotonic() - start
        assert op.done and op.resources == (), (op.state, op.resources)
        return fired[0], elapsed

    def stop(self) -> None:
        for server in self.servers:
            run_until(server.stop())
        for port in self.ports:
            run_until(untyped(port).stopListening())
        for blackhole in self.blackholes:
            blackhole.close()
        self.servers, self.ports, self.blackholes = [], [], []

    def finish(self, timeout: float = 10.0) -> float:
        """
        Every server saw all its connections closed; every completion watched
        fired exactly once; the registry is empty; once the servers stop
        listening the process holds nothing it did not hold before; nothing
        was logged at error level.  Returns the seconds it took to settle.
        """
        start = time.monotonic()
        iterate_until(
            lambda: all(s.open == 0 for s in self.servers),
            timeout,
            lambda: (
                "every server to see its connections closed: "
                + ", ".join(f"{s.name} has {s.open} open" for s in self.servers if s.open)
            ),
        )
        self.stop()
        self.snapshot.assert_clean(timeout)
        counts = [len(fired) for fired in self.completions]
        assert all(n == 1 for n in counts), f"completions fired {counts} times"
        assert len(self.registry) == 0, self.registry.describe()
        errors = [e for e in self.events if e.get("level") in ("error", "critical")]
        assert not errors, errors
        self.finished = True
        return time.monotonic() - start


# -- load --------------------------------------------------------------------------


@dataclass
class Drive:
    """
    What `drive` saw: each call's label (see ``start`` in `drive`), how many
    times each completion fired, the most calls in flight at once, the
    wall-clock seconds it took, and the highest value ``probe`` returned.
    """

    labels: list[str]
    fired: list[int]
    max_in_flight: int = 0
    elapsed: float = 0.0
    probe_max: int = 0


def drive(
    count: int,
    start: Callable[[int], Deferred[str]],
    *,
    concurrency: int,
    cancels: Mapping[int, tuple[float, int]] | None = None,
    timeout: float = 60.0,
    probe: Callable[[], int] | None = None,
) -> Drive:
    """
    Start calls ``0..count-1`` with ``start(i)``, keeping at most
    ``concurrency`` in flight (a new one starts as soon as one completes), and
    iterate the reactor until every one has completed.

    ``start(i)`` returns a Deferred that fires with a label for the outcome
    (so nothing big is kept) and whose ``cancel()`` cancels the call: an
    operation's ``completion``.  ``cancels[i] = (delay, times)`` cancels call
    ``i`` ``times`` times (a second cancel forces an operation) ``delay``
    seconds after it started, unless it completed first (the timer is then
    disarmed, so none is left behind).  ``probe``, if given, is called on
    every reactor iteration and the highest value it returns is recorded
    (e.g. the number of open file descriptors).
    """
    plan = cancels or {}
    result = Drive(labels=[""] * count, fired=[0] * count)
    timers: dict[int, Any] = {}
    state = {"next": 0, "in_flight": 0, "done": 0}

    def finished() -> bool:
        if probe is not None:
            result.probe_max = max(result.probe_max, probe())
        return state["done"] == count

    def cancel(d: Deferred[str], times: int) -> None:
        for _ in range(times):
            d.cancel()

    def completed(label: str, i: int) -> None:
        result.fired[i] += 1
        result.labels[i] = label
        state["in_flight"] -= 1
        state["done"] += 1
        timer = timers.pop(i, None)
        if timer is not None and timer.active():
            timer.cancel()
        launch()

    def launch() -> None:
        while state["next"] < count and state["in_flight"] < concurrency:
            i = state["next"]
            state["next"] += 1
            state["in_flight"] += 1
            result.max_in_flight = max(result.max_in_flight, state["in_flight"])
            d = start(i)
            if i in plan:
                delay, times = plan[i]
                timers[i] = reactor.callLater(delay, cancel, d, times)
            d.addCallback(completed, i)

    began = time.monotonic()
    launch()
    iterate_until(
        finished,
        timeout,
        lambda: f"{count - state['done']} of {count} calls to complete",
    )
    result.elapsed = time.monotonic() - began
    return result


def raise_fd_limit(needed: int) -> int:
    """
    Raise the soft limit on open files towards ``needed`` (within the hard
    limit); return the soft limit now in force.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def bare_fetch(peer: Peer, name: str) -> Deferred[bytes]:
    """
    The baseline: the same exchange as `fetch_machine` with bare Deferreds
    (connect, then the client's ``finished``, then close), no state machine
    and no timeouts.  Cancelling the Deferred cancels whichever step is live.
    """
    request = b"GET %s\r\n" % name.encode()

    def connected(client: FetchClient) -> Deferred[bytes]:
        def close(result: object) -> object:
            untyped(client.transport).loseConnection()
            return result

        return client.finished.addBoth(close)

    return connect(peer, request).addCallback(connected)
