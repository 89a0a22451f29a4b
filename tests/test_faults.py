"""
Fault injection with real sockets on 127.0.0.1.

Every fault runs against the generic operation of `tests.faulty_peers`
(connect, send a request line, read a length-prefixed body in chunks, each
chunk reported as progress to a guarded call), and the ones the examples can
meet run against ``examples.mirror_fetch`` and ``examples.poetry_proxy`` too.

For each, the test asserts:

- the completion fires exactly once, with the body of a healthy peer or the
  right error (`Stalled` carrying the `TimedOut`, `ProtocolError` for
  garbage, `TruncatedBody`, ``ConnectionLost`` for a reset,
  ``ConnectionRefusedError``, ``OperationCancelled``);
- nothing is left behind once the reactor has processed the pending
  disconnects: every server saw each of its connections closed, and the
  process holds no file descriptor, reactor reader or writer or delayed call
  it did not hold before (`Lab.finish`);
- nothing was logged at error level by fsmcancel (a cleanup error), and no
  "Unhandled error in Deferred" (tests/conftest.py).

DNS: the sandbox must not resolve names, so the "DNS failure" is a
``HostnameEndpoint`` for ``bad..name``, which Twisted rejects before any
lookup (``ValueError: invalid hostname``), synchronously.  The reactor is
only iterated here, never run, so its resolver thread pool is never started:
a real lookup would hang, and leave the sandbox.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import protocol
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.python.failure import Failure

from fsmcancel import OperationCancelled
from fsmcancel.timeouts import Timeouts, load_config
from tests.faulty_peers import (
    MODES,
    FetchOp,
    Lab,
    Mode,
    Peer,
    ProtocolError,
    Stalled,
    TruncatedBody,
    body_for,
    closed_port,
    fast_timeouts,
    fetch,
    untyped,
)
from tests.reactor_util import (
    iterate_until,
    outcome_of,
    reactor,
    run_until,
)

BODY = body_for("poem", 4096)


# -- the lab (tests.faulty_peers.Lab) and how to wait for an operation ---------------


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab.open() as the_lab:
        yield the_lab


def failure_of(outcome: object) -> BaseException:
    assert isinstance(outcome, Failure), f"expected a failure, got {outcome!r}"
    assert outcome.value is not None
    return outcome.value


# -- faults against the generic operation ---------------------------------------------


def test_healthy_peer_delivers_the_body(lab: Lab) -> None:
    server = lab.server("healthy", chunks=4, interval=0.02)
    op = fetch("poem", [server.peer()], fast_timeouts(), registry=lab.registry)
    outcome, _ = lab.complete(op)
    assert outcome == BODY
    assert op.core.attempts == [(server.name, None)]
    lab.finish()
    assert server.accepted == server.closed == 1


def test_peer_that_accepts_and_never_answers_is_declared_stalled(lab: Lab) -> None:
    server = lab.server("silent")
    op = fetch("poem", [server.peer()], fast_timeouts(idle_initial="500ms"), registry=lab.registry)
    outcome, elapsed = lab.complete(op)
    error = failure_of(outcome)
    assert isinstance(error, Stalled)
    assert error.timed_out.kind == "response" and error.timed_out.peer == server.name
    assert error.timed_out.rule == "idle"
    assert error.timed_out.limit == pytest.approx(0.5)
    assert error.received == 0
    assert 0.45 <= elapsed < 5.0
    lab.finish()
    assert server.requests == 1 and server.closed == 1


def test_peer_that_answers_the_header_then_stalls_is_declared_stalled(lab: Lab) -> None:
    server = lab.server("stall", chunks=4)
    op = fetch("poem", [server.peer()], fast_timeouts(), registry=lab.registry)
    outcome, elapsed = lab.complete(op)
    error = failure_of(outcome)
    assert isinstance(error, Stalled)
    assert error.timed_out.rule == "idle"
    assert error.received == len(BODY) // 4  # the first chunk came, then silence
    assert 0.25 <= elapsed < 5.0
    lab.finish()


def test_peer_that_resets_mid_transfer(lab: Lab) -> None:
    server = lab.server("reset", chunks=4, interval=0.02)
    op = fetch("poem", [server.peer()], fast_timeouts(), registry=lab.registry)
    outcome, elapsed = lab.complete(op)
    error = failure_of(outcome)
    # abortConnection sets SO_LINGER 0: the client sees ECONNRESET.
    assert isinstance(error, ConnectionLost), repr(error)
    assert elapsed < 0.5  # an error, not a timeout
    lab.finish()


def test_peer_that_sends_garbage(lab: Lab) -> None:
    server = lab.server("garbage")
    op = fetch("poem", [server.peer()], fast_timeouts(), registry=lab.registry)
    outcome, elapsed = lab.complete(op)
    error = failure_of(outcome)
    assert type(error) is ProtocolError and "bad header line" in str(error)
    assert elapsed < 0.5
    lab.finish()  # we aborted; the garbage server saw it


def test_peer_that_sends_a_truncated_body(lab: Lab) -> None:
    server = lab.server("truncated", chunks=4, interval=0.02)
    op = fetch("poem", [server.peer()], fast_timeouts(), registry=lab.registry)
    outcome, _ = lab.complete(op)
    error = failure_of(outcome)
    assert isinstance(error, TruncatedBody)
    assert str(error) == f"closed after {len(BODY) // 2} of {len(BODY)} bytes"
    lab.finish()


def test_slow_but_alive_peer_is_not_stalled(lab: Lab) -> None:
    # 25 chunks 80 ms apart: two seconds of trickle, twice the longest idle
    # timeout (1 s) and far beyond the cold one (500 ms).  Each chunk is
    # progress, so the call is never given up.
    server = lab.server("trickle", chunks=25, interval=0.08)
    op = fetch("poem", [server.peer()], fast_timeouts(), registry=lab.registry)
    outcome, elapsed = lab.complete(op)
    assert outcome == BODY
    assert elapsed > 1.8
    lab.finish()


def test_refused_connection(lab: Lab) -> None:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", closed_port())
    op = fetch("poem", [Peer("closed", endpoint)], fast_timeouts(), registry=lab.registry)
    outcome, elapsed = lab.complete(op)
    assert isinstance(failure_of(outcome), ConnectionRefusedError)
    assert elapsed < 0.5
    lab.finish()


def test_name_the_resolver_rejects(lab: Lab) -> None:
    # Rejected by Twisted before any lookup: nothing leaves the sandbox.
    endpoint = HostnameEndpoint(reactor, b"bad..name", 80)
    op = fetch("poem", [Peer("bad..name", endpoint)], fast_timeouts(), registry=lab.registry)
    outcome, _ = lab.complete(op)
    error = failure_of(outcome)
    assert isinstance(error, ValueError) and "invalid hostname" in str(error)
    lab.finish()


def test_peer_that_never_completes_the_handshake_hits_the_connect_deadline(lab: Lab) -> None:
    blackhole = lab.blackhole()
    op = fetch("poem", [blackhole.peer()], fast_timeouts(connect="300ms"), registry=lab.registry)
    outcome, elapsed = lab.complete(op)
    error = failure_of(outcome)
    assert isinstance(error, Stalled)
    assert error.timed_out.kind == "connect" and error.timed_out.rule == "deadline"
    assert 0.25 <= elapsed < 5.0
    lab.finish()


@pytest.mark.parametrize("mode", ["silent", "stall", "reset", "truncated", "garbage", "refused"])
def test_a_failed_peer_is_retried_once_on_the_next(lab: Lab, mode: str) -> None:
    healthy = lab.server("healthy")
    if mode == "refused":
        first = Peer("closed", TCP4ClientEndpoint(reactor, "127.0.0.1", closed_port()))
    else:
        first = lab.server(mode).peer()  # type: ignore[arg-type]
    op = fetch("poem", [first, healthy.peer()], fast_timeouts(), registry=lab.registry)
    outcome, _ = lab.complete(op)
    assert outcome == BODY
    (failed, error), (succeeded, none) = op.core.attempts
    assert failed == first.name and error is not None
    assert succeeded == healthy.name and none is None
    lab.finish()


def test_every_peer_failing_reports_the_last_error(lab: Lab) -> None:
    peers = [lab.server("garbage").peer(), lab.server("silent").peer()]
    op = fetch("poem", peers, fast_timeouts(), registry=lab.registry)
    outcome, _ = lab.complete(op)
    assert isinstance(failure_of(outcome), Stalled)
    assert [type(e) for _, e in op.core.attempts] == [ProtocolError, Stalled]
    lab.finish()


# -- cancellation at random moments ------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_cancel_at_random_moments(lab: Lab, seed: int) -> None:
    """
    80 fetches in flight against every kind of peer (and a blackhole, where
    connecting hangs), each cancelled at a random moment (one in five twice,
    the second cancel forcing); the cancels land in every state.
    """
    rng = random.Random(seed)
    servers = {
        "healthy": lab.server("healthy", chunks=4, interval=0.05, think=0.05),
        "trickle": lab.server("trickle", chunks=15, interval=0.04),
        "silent": lab.server("silent"),
        "stall": lab.server("stall"),
        "reset": lab.server("reset", chunks=6, interval=0.05),
        "truncated": lab.server("truncated", chunks=6, interval=0.05),
    }
    blackhole = lab.blackhole()
    names = [*sorted(servers), "blackhole"]
    timeouts = fast_timeouts()
    ops: list[tuple[FetchOp, str, list[object], list[str]]] = []
    timers = []
    for _ in range(80):
        kind = rng.choice(names)
        peer = blackhole.peer() if kind == "blackhole" else servers[kind].peer()
        op = fetch("poem", [peer], timeouts, registry=lab.registry)
        fired = lab.watch(op)
        seen: list[str] = []

        def cancel(op: FetchOp = op, seen: list[str] = seen, force: bool = False) -> None:
            seen.append(op.state)
            op.cancel("random cancel")
            if force:
                op.cancel("random force")

        force = rng.random() < 0.2
        timers.append(reactor.callLater(rng.uniform(0.0, 0.8), cancel, force=force))
        ops.append((op, kind, fired, seen))

    iterate_until(lambda: all(fired for _, _, fired, _ in ops), 20, "every completion")
    iterate_until(lambda: not any(t.active() for t in timers), 5, "every cancel timer")
    reactor.iterate(0.05)

    states: set[str] = set()
    for op, kind, fired, seen in ops:
        assert len(fired) == 1, (op, fired)
        assert op.resources == ()
        states.update(seen)
        outcome = fired[0]
        if outcome == BODY:
            assert kind in ("healthy", "trickle")
            continue
        error = failure_of(outcome)
        if isinstance(error, OperationCancelled):
            assert error.reason == "random cancel"
            assert error.state in ("idle", "connecting", "exchanging")
        elif kind in ("silent", "stall", "blackhole"):
            assert isinstance(error, Stalled), repr(error)
        elif kind == "reset":
            assert isinstance(error, ConnectionLost), repr(error)
        elif kind == "truncated":
            assert isinstance(error, TruncatedBody), repr(error)
        else:
            raise AssertionError(f"{kind}: unexpected {error!r}")
    # The cancels hit operations connecting, exchanging and finished.
    assert {"connecting", "exchanging", "done"} <= states, states
    lab.finish()


def test_cancel_in_each_state(lab: Lab) -> None:
    """Cancel the moment the operation is seen in each running state."""
    server = lab.server("trickle", chunks=20, interval=0.05)
    for state in ("connecting", "exchanging"):
        op = fetch("poem", [server.peer()], fast_timeouts(), registry=lab.registry)
        iterate_until(in_state(op, state))
        op.completion.cancel()
        outcome, _ = lab.complete(op)
        error = failure_of(outcome)
        assert isinstance(error, OperationCancelled) and error.state == state
    lab.finish()


def test_cancel_while_closing_is_too_late_and_force_cuts_it(lab: Lab) -> None:
    """
    ``closing`` is a cleanup state: the body is in, the connection is being
    closed politely.  Cancels change nothing, however many; ``force()``
    aborts the connection, and the completion fires at once with the
    outcome already recorded (the body).
    """
    server = lab.server("healthy")
    op = fetch("poem", [server.peer()], fast_timeouts(), registry=lab.registry)
    iterate_until(in_state(op, "closing"))
    fired = lab.watch(op)
    for _ in range(3):
        op.completion.cancel()
        op.cancel("defensive")
    assert fired == [] and op.state == "closing"
    op.force("the user insisted")
    assert fired == [BODY] and op.done and op.resources == ()
    lab.finish()


def in_state(op: Any, state: str) -> Callable[[], bool]:
    return lambda: op.state == state


# -- the examples -------------------------------------------------------------------------


def mirror_timeouts() -> Timeouts:
    return Timeouts(
        load_config(
            data={
                "kinds": {
                    "blob": {
                        "policy": "hedge",
                        "idle": {"initial": "500ms", "min": "300ms", "max": "1s"},
                        "hedge": {"initial": "100ms"},
                    },
                },
            },
            env={},
        )
    )


def start_blob(lab: Lab, tmp_path: Path, urls: list[str]) -> Any:
    from examples import mirror_blob

    mirrors = mirror_blob.Mirrors(urls, tmp_path, mirror_timeouts(), reactor)
    op = mirror_blob.blob_fetch_machine(mirror_blob.Blob(0, mirrors), registry=lab.registry)
    op.inputs.start()
    return op


@pytest.mark.parametrize("mode", ["reset", "truncated", "stall", "silent", "garbage"])
@pytest.mark.parametrize("backup", [False, True], ids=["alone", "with-backup"])
def test_mirror_fetch_against_a_faulty_mirror(
    lab: Lab, tmp_path: Path, mode: Mode, backup: bool
) -> None:
    from examples.mirror_blob import BlobUnavailable

    size = 16384
    faulty = lab.server(mode, wire="http", size=size, chunks=4, interval=0.02)
    healthy = lab.server("healthy", wire="http", size=size, chunks=4, interval=0.02)
    # Blob 0 asks the first mirror first (blob i starts at mirror i mod M).
    op = start_blob(lab, tmp_path, [faulty.url, healthy.url] if backup else [faulty.url])
    outcome, _ = lab.complete(op)
    blob, stats = op.core, op.core.run.stats
    silent = mode in ("stall", "silent")
    if backup:
        assert outcome == healthy.url
        assert (tmp_path / "0").read_bytes() == body_for("blob/0", size)
        # A silent mirror is hedged around (its request dropped when the
        # backup won); a broken one fails over.
        assert list(blob.failed) == ([] if silent else [faulty.url])
        assert stats[faulty.url].hedges_lost == (1 if silent else 0)
    else:
        error = failure_of(outcome)
        assert isinstance(error, BlobUnavailable)
        assert list(error.errors) == [faulty.url]
        assert error.errors[faulty.url].startswith("stalled" if silent else "")
    assert stats[faulty.url].requests == 1
    # No partial file is left, whatever happened.
    assert sorted(p.name for p in tmp_path.iterdir()) == (["0"] if backup else [])
    lab.finish()


def test_mirror_fetch_cancelled_mid_body(lab: Lab, tmp_path: Path) -> None:
    server = lab.server("trickle", wire="http", size=16384, chunks=40, interval=0.05)
    op = start_blob(lab, tmp_path, [server.url])
    iterate_until(lambda: any(tmp_path.iterdir()))  # the temporary file
    assert op.state == "fetching"
    op.completion.cancel()
    outcome, _ = lab.complete(op)
    assert isinstance(failure_of(outcome), OperationCancelled)
    assert list(tmp_path.iterdir()) == []
    lab.finish()


class PoetryClient(protocol.Protocol):
    """A client of the proxy: collects what it gets, notes when it is closed."""

    def __init__(self) -> None:
        self.data = b""
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost = reason


def start_proxy(lab: Lab, upstream: TCP4ClientEndpoint, name: str) -> tuple[Any, Any, int]:
    proxy = pytest.importorskip("examples.poetry_proxy")
    service = proxy.ProxyService(upstream, name)
    port = lab.listen(protocol.Factory.forProtocol(lambda: proxy.PoetryProxyProtocol(service)))
    return proxy, service, untyped(port).getHost().port


def connect_client(port: int) -> PoetryClient:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    client: PoetryClient = run_until(
        untyped(endpoint).connect(protocol.Factory.forProtocol(PoetryClient))
    )
    return client


def test_proxy_client_hangs_up_while_the_upstream_never_answers(lab: Lab) -> None:
    upstream = lab.server("silent", wire="poetry")
    _, service, port = start_proxy(lab, upstream.endpoint(), upstream.name)
    client = connect_client(port)
    iterate_until(lambda: upstream.accepted == 1 and len(service.requests.operations()) == 1)
    (request,) = service.requests.operations()
    download = service.current.op
    request_outcome = request.observe()
    download_outcome = download.observe()
    assert request.state == "waiting" and download.state == "receiving"

    untyped(client.transport).loseConnection()

    error = failure_of(outcome_of(request_outcome))
    assert isinstance(error, OperationCancelled) and error.reason == "client hung up"
    error = failure_of(outcome_of(download_outcome))
    assert isinstance(error, OperationCancelled) and error.state == "receiving"
    iterate_until(lambda: upstream.open == 0)  # the upstream saw it dropped
    assert service.requests.operations() == [] and service.current is None
    lab.finish()
    assert client.data == b""


@pytest.mark.parametrize("mode", ["reset", "refused"])
def test_proxy_upstream_fails_mid_poem(lab: Lab, mode: str) -> None:
    if mode == "refused":
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", closed_port())
        proxy, service, port = start_proxy(lab, endpoint, "closed")
    else:
        upstream = lab.server("reset", wire="poetry", size=4096, chunks=8, interval=0.02)
        proxy, service, port = start_proxy(lab, upstream.endpoint(), upstream.name)
    # Watch each request as the proxy starts it (it keeps no reference to
    # requests that have completed).
    outcomes: list[object] = []
    serve = service.serve

    def watched(client: Any) -> Any:
        op = serve(client)
        op.observe().addBoth(outcomes.append)
        return op

    service.serve = watched
    client = connect_client(port)
    iterate_until(lambda: client.lost is not None, what="the proxy to close the client")
    iterate_until(lambda: bool(outcomes))
    error = failure_of(outcomes[0])
    if mode == "refused":
        assert isinstance(error, ConnectionRefusedError)
    else:
        assert isinstance(error, proxy.UpstreamError) and "lost" in str(error)
    assert client.data == b""  # no partial poem is ever sent
    assert service.poem is None
    lab.finish()


def test_all_modes_are_exercised() -> None:
    # A guard against a mode added to the servers and forgotten here.
    assert set(MODES) == {"healthy", "trickle", "silent", "stall", "reset", "truncated", "garbage"}
