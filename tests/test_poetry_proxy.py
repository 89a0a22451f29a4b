"""
The poetry proxy (``examples.poetry_proxy``) against the slow poetry server.

Integration tests run both as subprocesses on 127.0.0.1 and follow them by
reading what they print (the server: one line per connection, chunk and
early disconnect; the proxy: its log on stderr).  Nothing waits by sleeping:
every wait is for a line, with a generous timeout.

The last tests drive the sharing logic in-process, under ``Clock``, with a
hand-driven endpoint and ``StringTransport`` connections.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from examples.poetry_proxy import (
    PoetryClient,
    PoetryProxyProtocol,
    ProxyService,
    UpstreamError,
)
from fsmcancel import OperationCancelled

ROOT = Path(__file__).resolve().parent.parent
RAVEN = ROOT / "examples" / "poems" / "raven.txt"
TIMEOUT = 10.0


class Running:
    """
    A subprocess whose output lines are collected, with the time each was
    read, by one thread per stream.
    """

    def __init__(self, module: str, *args: str) -> None:
        self.name = module
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: dict[str, list[tuple[float, str]]] = {"out": [], "err": []}
        self.unmatched: dict[str, list[tuple[float, str]]] = {"out": [], "err": []}
        self.arrived = threading.Condition()
        self.readers = [
            self._read("out", self.proc.stdout),
            self._read("err", self.proc.stderr),
        ]
        self.port = 0

    def listening(self) -> None:
        """
        Wait for the program to say where it listens.
        """
        self.port = int(self.expect(r"^listening on 127\.0\.0\.1:(\d+)$")[1].group(1))

    def _read(self, stream: str, pipe: IO[str] | None) -> threading.Thread:
        assert pipe is not None

        def read() -> None:
            for line in pipe:
                entry = (time.monotonic(), line.rstrip("\n"))
                with self.arrived:
                    self.lines[stream].append(entry)
                    self.unmatched[stream].append(entry)
                    self.arrived.notify_all()

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread

    def expect(
        self, pattern: str, stream: str = "out", timeout: float = TIMEOUT
    ) -> tuple[float, re.Match[str]]:
        """
        Wait for a line of ``stream`` matching ``pattern`` that no earlier
        ``expect`` matched (log lines of independent events may come in
        either order); return when it was read, and the match.
        """
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                lines = self.unmatched[stream]
                for i, (at, line) in enumerate(lines):
                    found = re.search(pattern, line)
                    if found:
                        del lines[i]
                        return at, found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.name}: no line matching {pattern!r} within {timeout} s\n"
                        f"stdout: {self.printed('out')}\nstderr: {self.printed('err')}"
                    )
                self.arrived.wait(left)

    def printed(self, stream: str = "out") -> list[str]:
        with self.arrived:
            return [line for _, line in self.lines[stream]]

    def stop(self) -> list[str]:
        """
        Stop the process and return everything it printed on stdout.
        """
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self.readers:
            reader.join(timeout=TIMEOUT)
        return self.printed()


Spawn = Callable[..., Running]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """
    Start example programs; every one is stopped when the test ends.
    """
    started: list[Running] = []

    def start(module: str, *args: str) -> Running:
        running = Running(module, *args)
        started.append(running)
        running.listening()
        return running

    yield start
    for running in started:
        running.stop()


def slow_server(
    spawn: Spawn,
    delay: float,
    chunk: int,
    poem: Path = RAVEN,
    port: int = 0,
    stall_after: int | None = None,
) -> Running:
    stall = [] if stall_after is None else [f"--stall-after={stall_after}"]
    return spawn(
        "examples.slow_poetry_server",
        f"--port={port}",
        f"--delay={delay}",
        f"--chunk={chunk}",
        *stall,
        str(poem),
    )


def proxy(spawn: Spawn, upstream_port: int) -> Running:
    return spawn("examples.poetry_proxy", "--port=0", f"--upstream=127.0.0.1:{upstream_port}")


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def read_all(sock: socket.socket) -> bytes:
    """
    Everything until the other side closes.
    """
    received = b""
    with sock:
        while data := sock.recv(65536):
            received += data
    return received


def nothing_received(sock: socket.socket) -> bool:
    """
    Has nothing arrived on ``sock`` yet (not even its close)?
    """
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)
    return False


def count(lines: list[str], pattern: str) -> int:
    return sum(1 for line in lines if re.search(pattern, line))


CONNECTED = r"^client \S+ connected$"
DISCONNECTED = r"^client \S+ disconnected after (\d+) of (\d+) bytes$"


# -- integration -------------------------------------------------------------


def test_client_hang_up_aborts_the_upstream_download(spawn: Spawn) -> None:
    server = slow_server(spawn, delay=0.2, chunk=10)
    poetry_proxy = proxy(spawn, server.port)

    client = connect(poetry_proxy.port)
    server.expect(CONNECTED)
    server.expect(r"^sent 10 bytes to ")
    assert nothing_received(client)

    hung_up = time.monotonic()
    client.close()
    seen, disconnected = server.expect(DISCONNECTED)
    elapsed = seen - hung_up
    print(f"\nclient hung up -> upstream saw the disconnect: {elapsed * 1000:.1f} ms")
    assert elapsed < 5
    assert int(disconnected[1]) < int(disconnected[2])
    poetry_proxy.expect(r"\bcancel\b.*reason='client hung up'.*state=waiting", "err")


def test_poem_arrives_intact_then_comes_from_the_cache(spawn: Spawn) -> None:
    server = slow_server(spawn, delay=0.2, chunk=200)  # 6 chunks, 5 delays: 1 s upstream
    poetry_proxy = proxy(spawn, server.port)

    first = time.monotonic()
    assert read_all(connect(poetry_proxy.port)) == RAVEN.read_bytes()
    uncached = time.monotonic() - first
    poetry_proxy.expect(r"\bpoem cached\b", "err")

    second = time.monotonic()
    assert read_all(connect(poetry_proxy.port)) == RAVEN.read_bytes()
    cached = time.monotonic() - second
    poetry_proxy.expect(r"\bsending cached poem\b", "err")
    print(f"\nfrom upstream: {uncached * 1000:.0f} ms; from the cache: {cached * 1000:.1f} ms")
    assert uncached > 0.7
    assert cached < 0.5

    printed = server.stop()
    assert count(printed, CONNECTED) == 1
    assert count(printed, r"^client \S+ got all 1135 bytes$") == 1


def test_two_clients_share_one_download_which_outlives_the_first(spawn: Spawn) -> None:
    server = slow_server(spawn, delay=0.1, chunk=100)  # about 1.1 s
    poetry_proxy = proxy(spawn, server.port)

    first = connect(poetry_proxy.port)
    poetry_proxy.expect(r"\bsubscribed\b.*subscribers=1\b", "err")
    second = connect(poetry_proxy.port)
    poetry_proxy.expect(r"\bsubscribed\b.*subscribers=2\b", "err")
    first.close()
    poetry_proxy.expect(r"\bcancel\b.*reason='client hung up'.*state=waiting", "err")
    poetry_proxy.expect(r"\bleft download\b.*subscribers=1\b", "err")

    assert read_all(second) == RAVEN.read_bytes()
    printed = server.stop()
    assert count(printed, CONNECTED) == 1
    assert count(printed, DISCONNECTED) == 0
    assert count(printed, r"got all 1135 bytes$") == 1


def test_the_shared_download_stops_when_the_last_client_hangs_up(spawn: Spawn) -> None:
    server = slow_server(spawn, delay=0.2, chunk=10)  # about 22 s: never finishes here
    poetry_proxy = proxy(spawn, server.port)

    first = connect(poetry_proxy.port)
    poetry_proxy.expect(r"\bsubscribed\b.*subscribers=1\b", "err")
    second = connect(poetry_proxy.port)
    poetry_proxy.expect(r"\bsubscribed\b.*subscribers=2\b", "err")
    server.expect(CONNECTED)
    first.close()
    poetry_proxy.expect(r"\bleft download\b.*subscribers=1\b", "err")
    assert nothing_received(second)

    hung_up = time.monotonic()
    second.close()
    seen, _ = server.expect(DISCONNECTED)
    print(f"\nlast client hung up -> upstream saw the disconnect: {(seen - hung_up) * 1000:.1f} ms")
    assert hung_up < seen < hung_up + 5
    poetry_proxy.expect(r"\blast subscriber left: cancelling download\b", "err")

    printed = server.stop()
    assert count(printed, CONNECTED) == 1
    assert count(printed, DISCONNECTED) == 1


def test_upstream_down_closes_the_client_and_the_proxy_keeps_serving(spawn: Spawn) -> None:
    with socket.socket() as probe:  # a port with nobody listening, for now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    poetry_proxy = proxy(spawn, port)

    assert read_all(connect(poetry_proxy.port)) == b""
    poetry_proxy.expect(r"\bupstream failed\b.*ConnectionRefused", "err")
    poetry_proxy.expect(r"\bclosing client without a poem\b", "err")

    # The failure was not cached: once the server is up, the poem comes.
    slow_server(spawn, delay=0.01, chunk=512, port=port)
    assert read_all(connect(poetry_proxy.port)) == RAVEN.read_bytes()


def test_upstream_closing_without_a_poem_closes_the_client(spawn: Spawn, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    server = slow_server(spawn, delay=0.01, chunk=10, poem=empty)
    poetry_proxy = proxy(spawn, server.port)

    assert read_all(connect(poetry_proxy.port)) == b""
    poetry_proxy.expect(r"\bupstream failed\b.*before sending a poem", "err")
    assert read_all(connect(poetry_proxy.port)) == b""  # and again: nothing was cached


# -- a silent or stalled upstream is given up -----------------------------------

FAST = (
    '[kinds.connect]\npolicy = "deadline"\ndeadline.initial = "1s"\n'
    '[kinds.poem]\nidle.initial = "1s"\nidle.min = "500ms"\n'
)


def guarded_proxy(spawn: Spawn, upstream_port: int, tmp_path: Path) -> Running:
    """A proxy whose upstream limits are 1 s while it knows nothing."""
    timeouts = tmp_path / "timeouts.toml"
    timeouts.write_text(FAST)
    return spawn(
        "examples.poetry_proxy",
        "--port=0",
        f"--upstream=127.0.0.1:{upstream_port}",
        f"--timeouts={timeouts}",
    )


def test_an_upstream_that_accepts_and_never_sends_is_given_up(spawn: Spawn, tmp_path: Path) -> None:
    server = spawn("examples.slow_poetry_server", "--port=0", "--stall-after=0", str(RAVEN))
    poetry_proxy = guarded_proxy(spawn, server.port, tmp_path)
    client = connect(poetry_proxy.port)
    server.expect(CONNECTED)
    server.expect(r"^stalled \S+ after 0 bytes$")
    assert read_all(client) == b""  # closed, without a poem
    poetry_proxy.expect(
        r"\bupstream failed\b.*went silent: nothing for 1\.00s \(idle limit\) after 0 bytes", "err"
    )
    poetry_proxy.expect(r"\bclosing client without a poem\b", "err")
    _, disconnected = server.expect(DISCONNECTED)  # the proxy dropped the upstream
    assert disconnected[1] == "0"


def test_an_upstream_that_stalls_mid_poem_is_given_up(spawn: Spawn, tmp_path: Path) -> None:
    server = slow_server(spawn, delay=0.05, chunk=10, stall_after=100)
    poetry_proxy = guarded_proxy(spawn, server.port, tmp_path)
    client = connect(poetry_proxy.port)
    server.expect(r"^stalled \S+ after 100 bytes$")
    assert read_all(client) == b""  # no partial poem, ever
    poetry_proxy.expect(r"\bupstream failed\b.*went silent: .* after 100 bytes", "err")
    _, disconnected = server.expect(DISCONNECTED)
    assert disconnected[1] == "100"


def test_a_slow_upstream_that_keeps_sending_is_not_cut(spawn: Spawn, tmp_path: Path) -> None:
    # A chunk every 0.3 s for about 3.3 s: three times the 1 s silence limit
    # in all, never that silent.
    server = slow_server(spawn, delay=0.3, chunk=100)
    poetry_proxy = guarded_proxy(spawn, server.port, tmp_path)
    assert read_all(connect(poetry_proxy.port)) == RAVEN.read_bytes()
    poetry_proxy.expect(r"\bpoem cached\b", "err")
    assert not any("upstream failed" in line for line in poetry_proxy.printed("err"))


def test_an_upstream_that_never_accepts_is_given_up(spawn: Spawn, tmp_path: Path) -> None:
    # Listening with a backlog of 0 and its one slot taken: the kernel
    # drops further SYNs, as for a host that vanished.
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(0)
        port = listening.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            poetry_proxy = guarded_proxy(spawn, port, tmp_path)
            assert read_all(connect(poetry_proxy.port)) == b""
            poetry_proxy.expect(
                rf"\bupstream failed\b.*connecting to 127\.0\.0\.1:{port} timed out after "
                r"1\.\d\ds \(deadline limit 1\.00s\)",
                "err",
            )


# -- the sharing logic, in-process ---------------------------------------------


class ManualEndpoint:
    """
    An endpoint whose connect attempts the test completes by hand.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[Any, Deferred[Any]]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append((factory, d))
        return d

    def succeed(self, index: int = -1) -> tuple[PoetryClient, StringTransport]:
        factory, d = self.attempts[index]
        client: PoetryClient = factory.buildProtocol(None)
        transport = StringTransport()
        client.makeConnection(transport)
        d.callback(client)
        return client, transport


def new_service() -> tuple[ProxyService, ManualEndpoint]:
    endpoint = ManualEndpoint()
    return ProxyService(endpoint, "upstream", clock=Clock()), endpoint


def arrive(service: ProxyService) -> tuple[PoetryProxyProtocol, StringTransport]:
    client = PoetryProxyProtocol(service)
    transport = StringTransport()
    client.makeConnection(transport)
    return client, transport


def hang_up(client: PoetryProxyProtocol) -> None:
    client.connectionLost(Failure(ConnectionDone()))


def capture(d: Deferred[Any]) -> list[object]:
    """
    A list that will hold what ``d`` fires with (a Failure is consumed).
    """
    outcome: list[object] = []
    d.addBoth(outcome.append)
    return outcome


def live_ops(service: ProxyService) -> list[str]:
    return [op.state for op in service.requests.operations()]


def test_sharing_the_download_keeps_it_until_the_last_subscriber_leaves() -> None:
    service, endpoint = new_service()
    first, _ = arrive(service)
    second, _ = arrive(service)
    assert len(endpoint.attempts) == 1
    upstream, upstream_transport = endpoint.succeed()
    upstream.dataReceived(b"Once upon")
    shared = service.current
    assert shared is not None and shared.subscribers == 2

    hang_up(first)
    assert shared.subscribers == 1
    assert shared.op.state == "receiving"
    assert not upstream_transport.disconnected

    captured = capture(shared.op.observe())
    hang_up(second)
    assert upstream_transport.disconnected  # aborted, in this very call
    [outcome] = captured
    assert isinstance(outcome, Failure) and outcome.check(OperationCancelled)
    assert "its last subscriber left" in str(outcome.value)
    assert service.current is None and service.poem is None
    assert live_ops(service) == []

    # Nobody is sharing a cancelled download: the next client starts afresh.
    arrive(service)
    assert len(endpoint.attempts) == 2
    assert service.current is not None and service.current is not shared


def test_the_last_hang_up_while_connecting_cancels_the_connect_attempt() -> None:
    service, endpoint = new_service()
    client, _ = arrive(service)
    _, attempt = endpoint.attempts[0]
    download = service.current
    assert download is not None
    captured = capture(download.op.observe())
    hang_up(client)
    assert attempt.called  # cancelled by the release of "connecting"
    [outcome] = captured
    assert isinstance(outcome, Failure) and outcome.check(OperationCancelled)
    assert "in state 'connecting'" in str(outcome.value)


def test_a_downloaded_poem_goes_to_every_subscriber_then_comes_from_the_cache() -> None:
    service, endpoint = new_service()
    (first, first_transport), (second, second_transport) = arrive(service), arrive(service)
    upstream, _ = endpoint.succeed()
    upstream.dataReceived(b"Once upon a midnight dreary,\n")
    upstream.dataReceived(b"while I pondered, weak and weary\n")
    upstream.connectionLost(Failure(ConnectionDone()))
    poem = b"Once upon a midnight dreary,\nwhile I pondered, weak and weary\n"
    for transport in (first_transport, second_transport):
        assert transport.value() == poem
        assert transport.disconnecting and not transport.disconnected
    assert service.poem == poem and service.current is None
    assert live_ops(service) == ["closing", "closing"]

    hang_up(first)
    hang_up(second)
    assert live_ops(service) == []

    _, third_transport = arrive(service)
    assert third_transport.value() == poem
    assert len(endpoint.attempts) == 1


def test_upstream_closing_before_any_data_closes_every_client_without_a_poem() -> None:
    service, endpoint = new_service()
    clients = [arrive(service), arrive(service)]
    ops = service.requests.operations()
    failures: list[Failure] = []
    for op in ops:
        op.observe().addErrback(failures.append)
    upstream, _ = endpoint.succeed()
    upstream.connectionLost(Failure(ConnectionDone()))
    for _, transport in clients:
        assert transport.value() == b""
        assert transport.disconnecting
    assert service.poem is None and service.current is None
    assert live_ops(service) == ["closing", "closing"]

    # Each request finishes, failed, once its client has gone.
    for client, _ in clients:
        hang_up(client)
    assert [f.check(UpstreamError) for f in failures] == [UpstreamError, UpstreamError]


def test_in_process_each_upstream_limit_closes_the_clients_and_drops_the_upstream() -> None:
    # The connect: never completes; given up at the 5 s connect deadline.
    service, endpoint = new_service()
    clock = service.clock
    assert isinstance(clock, Clock)
    request, client = arrive(service)
    clients = [request]
    clock.advance(4.9)
    assert not endpoint.attempts[0][1].called and not client.disconnecting
    clock.advance(0.1)
    assert endpoint.attempts[0][1].called  # cancelled: the attempt is dropped
    assert client.disconnecting and client.value() == b""
    # The first byte, then a chunk: 10 s of silence is the limit while the
    # kind knows nothing.
    for sent in ([], [b"Once upon"]):
        request, client = arrive(service)
        clients.append(request)
        upstream, upstream_transport = endpoint.succeed()
        for chunk in sent:
            clock.advance(1)
            upstream.dataReceived(chunk)
        clock.advance(9.9)
        assert not upstream_transport.disconnected
        clock.advance(0.1)
        assert upstream_transport.disconnected and client.disconnecting
        assert client.value() == b"" and service.poem is None
    for request in clients:
        hang_up(request)
    assert live_ops(service) == [] and clock.getDelayedCalls() == []


def test_in_process_a_slow_upstream_is_never_cut_while_it_sends() -> None:
    service, endpoint = new_service()
    clock = service.clock
    assert isinstance(clock, Clock)
    _, client = arrive(service)
    upstream, _ = endpoint.succeed()
    for _ in range(100):  # 15 minutes, a chunk every 9 s
        clock.advance(9)
        upstream.dataReceived(b"line\n")
    upstream.connectionLost(Failure(ConnectionDone()))
    assert client.value() == b"line\n" * 100
