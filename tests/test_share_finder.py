"""
``examples.share_finder`` as a program, over real sockets on 127.0.0.1,
against the stdlib cluster of `examples.share_cluster` (run in a thread of
this process, so its events carry this machine's monotonic clock) and
against a raw-socket peer written here.

Timing is measured from the servers' side: when a stalling server sent its
last byte, and when another server received the re-request.  Waits are
for events, never sleeps, each with a generous bound.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.share_cluster import Cluster, Event, ServerSpec, file_bytes, running, server_spec
from examples.share_finder import Run, Settings, parse_args, write_atomically
from fsmcancel.timeouts import load_config
from tests.faulty_peers import closed_port
from tests.reactor_util import Snapshot, iterate_until, reactor, warm_up

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("FSMCANCEL_TIMEOUTS__")},
    "PYTHONPATH": str(ROOT),
}
SI = "v0abc"

#: For tests: queries as in the shipped file (slow servers think up to
#: 1.5 s), share bodies from a 300 ms limit (the goal for a stall).
TEST_TIMEOUTS = """
[kinds.query]
idle.initial = "2s"
idle.min = "250ms"
[kinds.share]
idle.initial = "300ms"
idle.min = "250ms"
"""


@pytest.fixture
def timeouts(tmp_path: Path) -> Path:
    path = tmp_path / "timeouts.toml"
    path.write_text(TEST_TIMEOUTS)
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    directory = tmp_path / "out"
    directory.mkdir()
    return directory / "file"


@pytest.fixture
def cluster_of(request: pytest.FixtureRequest) -> Iterator[Any]:
    clusters: list[Any] = []

    def start(k: int, *specs: str) -> Cluster:
        context = running(SI, k, [server_spec(s) for s in specs], seed=11)
        clusters.append(context)
        return context.__enter__()

    yield start
    for context in reversed(clusters):
        context.__exit__(None, None, None)


def command(cluster: Cluster, k: int, out: Path, *args: str) -> list[str]:
    argv = [sys.executable, "-m", "examples.share_finder", "--si", SI, "-k", str(k)]
    argv += ["--out", str(out), *args]
    for address in cluster.addresses:
        argv += ["--server", address]
    return argv


def find(cluster: Cluster, k: int, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(cluster, k, out, *args),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def all_closed(cluster: Cluster) -> None:
    """Wait until every connection a server saw has ended."""

    def closed(events: list[Event]) -> bool:
        opened = sum(1 for e in events if e.what == "opened")
        return opened > 0 and opened == sum(1 for e in events if e.what == "closed")

    cluster.wait(closed)


def rerequests(cluster: Cluster) -> list[float]:
    """
    For each GET a server went silent on, the seconds until another server
    received the same GET.
    """
    delays = []
    for stall in (e for e in cluster.events if e.what == "silent"):
        again = [
            e.at
            for e in cluster.events
            if e.what == "request" and e.detail == stall.detail and e.server != stall.server
            if e.at > stall.at
        ]
        assert again, f"{stall.detail} was never asked of another server after {stall}"
        delays.append(min(again) - stall.at)
    return delays


# -- a cluster with every kind of fault -----------------------------------------------------

FAULTY = (
    "healthy:0-1",
    "silent",  # holds everything, never answers
    "stall:2-4",  # answers queries, stalls mid-body on every GET
    "healthy:2-4@0.05",  # the other holder of 2-4, a little slower to answer queries
    "slow:5-7",  # alive but slow: 0.3-1.5 s to answer, trickled bodies
    "reset:5",
    "short:6",
    "garbage:7",
    "long:5-7",
    "none",  # says it holds everything, refuses every GET
)


def test_every_fault_at_once_the_file_is_exact(cluster_of: Any, out: Path, timeouts: Path) -> None:
    cluster = cluster_of(8, *FAULTY)
    expected = file_bytes(SI, 8)
    digest = hashlib.sha256(expected).hexdigest()
    done = find(cluster, 8, out, "--json", "--timeouts", str(timeouts), "--sha256", digest)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == expected
    assert os.listdir(out.parent) == [out.name]

    report = json.loads(done.stdout)
    servers = dict(zip(FAULTY, cluster.addresses, strict=True))
    stats = report["servers"]
    # Each share from a server that can serve it.
    good = {servers["healthy:0-1"], servers["healthy:2-4@0.05"], servers["slow:5-7"]}
    assert set(report["shares"]) == {str(n) for n in range(8)}
    assert set(report["shares"].values()) <= good
    # Every GET to the staller stalled and was sent elsewhere in time.
    staller = stats[servers["stall:2-4"]]
    assert staller["gets"] >= 1 and staller["stalls"] == staller["gets"]
    delays = rerequests(cluster)
    assert len(delays) == staller["stalls"]
    assert all(d < 1.0 for d in delays), delays
    assert 0.25 <= report["max_stall_detection_seconds"] < 1.0
    # The slow but alive server was never given up on.
    assert stats[servers["slow:5-7"]]["stalls"] == stats[servers["slow:5-7"]]["errors"] == 0
    # Faults are named as what they are.
    problems = {name: " ".join(stats[servers[name]]["problems"]) for name in servers}
    for name, said in [
        ("reset:5", "reset"),
        ("short:6", "short body"),
        ("garbage:7", "garbled"),
        ("long:5-7", "longer than declared"),
        ("none", "NONE"),
    ]:
        assert said in problems[name] or stats[servers[name]]["gets"] == 0, (name, problems)
    assert report["max_open_connections"] <= 10
    # Nothing left open, seen from the servers.
    all_closed(cluster)


def test_at_most_c_connections_at_once(cluster_of: Any, out: Path, timeouts: Path) -> None:
    cluster = cluster_of(6, *(f"healthy:{n % 6},{(n + 1) % 6}" for n in range(8)))
    done = find(cluster, 6, out, "--concurrency", "2", "--json", "--timeouts", str(timeouts))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == file_bytes(SI, 6)
    report = json.loads(done.stdout)
    assert report["max_open_connections"] == 2
    assert sum(s["gets"] for s in report["servers"].values()) == 6
    all_closed(cluster)


# -- failures -------------------------------------------------------------------------------


def test_a_share_only_silent_servers_hold_fails_naming_it(
    cluster_of: Any, out: Path, tmp_path: Path
) -> None:
    fast = tmp_path / "fast.toml"
    fast.write_text('[kinds.query]\nidle.initial = "300ms"\nidle.min = "250ms"\n')
    cluster = cluster_of(4, "healthy:0-2", "silent", "silent:3")
    done = find(cluster, 4, out, "--json", "--timeouts", str(fast))
    assert done.returncode == 1, done.stderr
    assert not out.parent.joinpath(out.name).exists() and os.listdir(out.parent) == []
    silent = cluster.addresses[1:]
    assert "cannot get shares 3 of v0abc" in done.stderr
    assert "share 3: no server that answered holds it" in done.stderr
    for address in silent:
        assert f"{address}: QUERY: stalled: silent for" in done.stderr
    report = json.loads(done.stdout)
    assert report["missing"] == [3]
    assert all(report["servers"][a]["stalls"] == 1 for a in silent)
    all_closed(cluster)


def test_a_share_every_holder_fails_names_each_error(cluster_of: Any, out: Path) -> None:
    cluster = cluster_of(2, "healthy:0", "short:1", "none:1", "garbage:1")
    done = find(cluster, 2, out)
    assert done.returncode == 1
    assert not out.exists()
    [line] = [line for line in done.stderr.splitlines() if "share 1:" in line]
    short, none, garbage = cluster.addresses[1:]
    assert f"{short}: GET 1: short body: connection closed after" in line
    assert f"{none}: GET 1: NONE: does not hold share 1" in line
    assert f"{garbage}: GET 1: garbled answer to GET 1" in line


def test_a_server_that_refuses_connections_is_one_error_among_others(
    cluster_of: Any, out: Path
) -> None:
    cluster = cluster_of(2, "healthy@0.2")  # answers after the refusal is seen
    dead = f"127.0.0.1:{closed_port()}"
    done = find(cluster, 2, out, "--json", "--server", dead)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == file_bytes(SI, 2)
    [problem] = json.loads(done.stdout)["servers"][dead]["problems"]
    assert problem.startswith("QUERY: ") and "refused" in problem


def test_a_wrong_sha256_writes_nothing(cluster_of: Any, out: Path) -> None:
    cluster = cluster_of(3, "healthy")
    done = find(cluster, 3, out, "--sha256", "0" * 64)
    assert done.returncode == 1
    assert "sha256 mismatch: expected 0000" in done.stderr
    assert os.listdir(out.parent) == []


# -- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_transfer_cancels_and_closes_everything(
    cluster_of: Any, out: Path, signum: int, status: int
) -> None:
    cluster = cluster_of(6, "slow", "slow", "silent")
    finder = subprocess.Popen(
        command(cluster, 6, out, "--json"),
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Mid-transfer: downloads under way, the silent server still asked.
        cluster.wait(lambda events: sum(e.detail.startswith("GET") for e in events) >= 2)
        finder.send_signal(signum)
        stdout, stderr = finder.communicate(timeout=20)
    finally:
        if finder.poll() is None:
            finder.kill()
            finder.wait()
    assert finder.returncode == status, stderr
    assert f"interrupted by {signal.Signals(signum).name}" in stderr
    assert os.listdir(out.parent) == []
    assert json.loads(stdout)["shares"] == {}
    all_closed(cluster)
    ended = [e.detail for e in cluster.events if e.what == "closed"]
    assert any(d.startswith("by the client") for d in ended)


# -- the process's own descriptors --------------------------------------------------------------


def settings(cluster: Cluster, k: int, out: Path, timeouts: Path) -> Settings:
    return Settings(
        cluster.addresses, SI, k, out, None, 10, load_config(timeouts, env={}), json=True
    )


def test_in_process_nothing_is_left_open(cluster_of: Any, out: Path, timeouts: Path) -> None:
    warm_up()
    cluster = cluster_of(5, "healthy:0-2", "stall:3-4", "healthy:3-4@0.05", "silent")
    before = Snapshot()
    run = Run(reactor, settings(cluster, 5, out, timeouts))
    run.start()
    statuses: list[int] = []
    run.finished.addCallback(statuses.append)
    iterate_until(lambda: bool(statuses), timeout=20)
    assert statuses == [0] and out.read_bytes() == file_bytes(SI, 5)
    assert json.loads(json.dumps(run.report()))["max_stall_detection_seconds"] > 0
    before.assert_clean()
    all_closed(cluster)


def test_in_process_a_cancel_leaves_nothing_open(
    cluster_of: Any, out: Path, timeouts: Path
) -> None:
    warm_up()
    cluster = cluster_of(4, "slow", "silent")
    before = Snapshot()
    run = Run(reactor, settings(cluster, 4, out, timeouts))
    run.start()
    statuses: list[int] = []
    run.finished.addCallback(statuses.append)
    iterate_until(lambda: any(e.detail.startswith("GET") for e in cluster.events), timeout=20)
    run.interrupt(signal.SIGINT)
    run.interrupt(signal.SIGINT)  # a second one forces: nothing is left to force
    iterate_until(lambda: bool(statuses), timeout=20)
    assert statuses == [130] and not out.exists()
    before.assert_clean(ignore_calls=[])
    all_closed(cluster)


# -- a peer written by hand ---------------------------------------------------------------------


def test_a_raw_socket_peer_sees_exactly_the_protocol(out: Path) -> None:
    shares = {0: b"hello", 1: b" world", 2: b""}
    seen: list[tuple[bytes, bytes]] = []  # (request, what the client sent after it)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)

    def serve() -> None:
        for _ in range(4):
            conn, _ = listener.accept()
            with conn:
                request = b""
                while not request.endswith(b"\n"):
                    request += conn.recv(1)
                if request == b"QUERY zz9\n":
                    conn.sendall(b"HAVE zz9 0 1 2\n")
                else:
                    n = int(request.split()[2])
                    conn.sendall(b"SHARE zz9 %d %d\n%s" % (n, len(shares[n]), shares[n]))
                conn.shutdown(socket.SHUT_WR)  # the response ends with our close
                rest = b""
                while chunk := conn.recv(100):
                    rest += chunk
                seen.append((request, rest))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    digest = hashlib.sha256(b"hello world").hexdigest()
    argv = [sys.executable, "-m", "examples.share_finder", "--server", f"127.0.0.1:{port}"]
    argv += ["--si", "zz9", "-k", "3", "--out", str(out), "--sha256", digest]
    done = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    thread.join(timeout=20)
    listener.close()
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == b"hello world"
    # One request per connection, each exactly one line, nothing after it.
    assert seen[0] == (b"QUERY zz9\n", b"")
    assert sorted(seen[1:]) == [(b"GET zz9 %d\n" % n, b"") for n in range(3)]


# -- writing the file ------------------------------------------------------------------------


def test_write_atomically_replaces_and_leaves_nothing_beside(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomically(target, b"first")
    write_atomically(target, b"second")
    assert target.read_bytes() == b"second" and os.listdir(tmp_path) == ["f"]


def test_write_atomically_leaves_nothing_when_it_fails(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "f"
    with pytest.raises(FileNotFoundError):
        write_atomically(target, b"x")
    assert os.listdir(tmp_path) == []


# -- the command line ------------------------------------------------------------------------


BAD: list[tuple[list[str], list[str]]] = [
    (["--si", "abc", "-k", "2"], ["at least one --server HOST:PORT"]),
    (["--server", "localhost", "--si", "abc", "-k", "2"], ["bad server address 'localhost'"]),
    (["--server", "h:99999", "--si", "abc", "-k", "2"], ["bad server address 'h:99999'"]),
    (["--server", "h:1", "--server", "h:1", "--si", "a", "-k", "2"], ["--server is given twice"]),
    (["--server", "h:1", "--si", "ABC", "-k", "2"], ["bad storage index 'ABC'"]),
    (["--server", "h:1", "--si", "a" * 65, "-k", "2"], ["bad storage index"]),
    (["--server", "h:1", "--si", "abc", "-k", "0"], ["-k", "'0' is not a positive number"]),
    (["--server", "h:1", "--si", "abc", "-k", "x"], ["-k", "'x' is not a whole number"]),
    (["--server", "h:1", "--si", "a", "-k", "2", "--concurrency", "0"], ["--concurrency", "'0'"]),
    (["--server", "h:1", "--si", "a", "-k", "2", "--sha256", "xyz"], ["bad sha256 'xyz'"]),
    (
        ["--server", "h:1", "--si", "a", "-k", "2", "--timeouts", "{bad}"],
        ["kinds.share.idle.min", "'fast'", "kinds.share.policy", "'sometimes'"],
    ),
    (["--server", "h:1", "--si", "a", "-k", "2", "--timeouts", "{tmp}/no.toml"], ["cannot read"]),
]


@pytest.mark.parametrize(("args", "expected"), BAD)
def test_bad_command_lines_are_refused_naming_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: list[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[kinds.share]\npolicy = "sometimes"\nidle.min = "fast"\n')
    argv = [a.format(bad=bad, tmp=tmp_path) for a in args] + ["--out", str(tmp_path / "f")]
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err


@pytest.mark.parametrize(
    ("out", "expected"), [("{tmp}", "is a directory"), ("{tmp}/no/f", "cannot write in")]
)
def test_a_bad_output_file_is_refused(tmp_path: Path, out: str, expected: str) -> None:
    argv = [sys.executable, "-m", "examples.share_finder", "--server", "h:1", "--si", "a"]
    argv += ["-k", "1", "--out", out.format(tmp=tmp_path)]
    done = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and expected in done.stderr and done.stdout == ""


def test_server_specs_of_the_cluster_parse() -> None:
    assert server_spec("stall:2-4,7@0.5") == ServerSpec("stall", frozenset({2, 3, 4, 7}), 0.5)
    assert server_spec("silent") == ServerSpec("silent")
