"""
``examples.mirror_fetch`` against ``examples.mirror_server``: real processes,
real sockets on 127.0.0.1, no mocks.

Synchronisation is by reading what the servers print (every line is flushed
as it happens), never by sleeping; every wait has a generous bound.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from examples.mirror_fetch import parse_args
from examples.mirror_server import DEFAULT_BLOB_SIZE, blob_bytes

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("FSMCANCEL_TIMEOUTS__")},
    "PYTHONPATH": str(ROOT),
}
WAIT = 20.0  # the bound on any single wait


#: Notified whenever any server prints a line.
_PRINTED = threading.Condition()


def wait_until(condition: Callable[[], bool], what: object, timeout: float = WAIT) -> None:
    """Block until ``condition()`` holds, re-checking as servers print."""
    with _PRINTED:
        if not _PRINTED.wait_for(condition, timeout):
            raise AssertionError(f"timed out waiting: {what}")


class Server:
    """
    A ``mirror_server`` subprocess whose output lines are collected, as
    they are printed, by a thread.
    """

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "examples.mirror_server", "--port", "0", *args],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.exited = False
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda lines: bool(lines))
        match = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)", self.lines[0])
        assert match, self.lines
        self.url = f"http://{match.group(1)}"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with _PRINTED:
                self.lines.append(line.rstrip("\n"))
                _PRINTED.notify_all()
        with _PRINTED:
            self.exited = True
            _PRINTED.notify_all()

    def wait_for(self, done: Callable[[list[str]], bool], timeout: float = WAIT) -> list[str]:
        """Wait until ``done(lines)``; fail if the server exits first."""

        def check() -> bool:
            return done(self.lines) or self.exited

        wait_until(check, self.lines, timeout)
        assert done(self.lines), f"server exited: {self.lines}"
        return self.lines

    def all_connections_closed(self) -> list[str]:
        return self.wait_for(lambda lines: _opened(lines) == _closed(lines))

    def requests(self, outcome: str) -> list[int]:
        """Blob numbers of the requests that ended as ``outcome``."""
        pattern = re.compile(rf"GET /blob/(\d+) -> {re.escape(outcome)}( at \S+)?")
        return [int(m.group(1)) for line in self.lines if (m := pattern.fullmatch(line))]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def _opened(lines: list[str]) -> int:
    return sum(1 for line in lines if re.fullmatch(r"connection \d+ opened", line))


def _closed(lines: list[str]) -> int:
    return sum(1 for line in lines if re.match(r"connection \d+ closed", line))


@contextmanager
def servers(*configs: tuple[str, ...]) -> Iterator[list[Server]]:
    with ExitStack() as stack:
        started = []
        for args in configs:
            server = Server(*args)
            stack.callback(server.stop)
            started.append(server)
        yield started


def fetch_command(mirrors: list[Server], out: Path, *args: str) -> list[str]:
    command = [sys.executable, "-m", "examples.mirror_fetch", "--out", str(out), *args]
    for mirror in mirrors:
        command += ["--mirror", mirror.url]
    return command


def fetch(mirrors: list[Server], out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fetch_command(mirrors, out, *args),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_fetch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.mirror_fetch", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_blobs(out: Path, count: int, size: int = DEFAULT_BLOB_SIZE) -> None:
    assert sorted(os.listdir(out)) == sorted(str(i) for i in range(count))
    for i in range(count):
        assert (out / str(i)).read_bytes() == blob_bytes(i, size), f"blob {i} is wrong"


# -- a mirror goes silent -------------------------------------------------------


@pytest.mark.parametrize("mode", ["no-response", "mid-body"])
def test_a_mirror_that_goes_silent_is_failed_over(tmp_path: Path, mode: str) -> None:
    healthy = ("--latency-ms", "150", "--chunks", "6")
    silent = (*healthy, "--stall-after", "6", "--stall-mode", mode)
    out = tmp_path / "out"
    with servers(healthy, healthy, silent) as (a, b, c):
        done = fetch([a, b, c], out, "--count", "60", "--concurrency", "4", "--json")
        finished_at = time.monotonic()
        assert done.returncode == 0, done.stderr
        assert_blobs(out, 60)

        report = json.loads(done.stdout)
        assert report["fetched"] == 60 and report["failed"] == 0
        stats = report["mirrors"]
        assert sum(m["successes"] for m in stats.values()) == 60
        for server in (a, b, c):
            server.all_connections_closed()
        # Every stalled request was sent again to a healthy mirror, while
        # the silent one kept it (a hedge), or after it was given up...
        stalled = c.requests("stalled")
        assert stalled and stats[c.url]["hedges_lost"] + stats[c.url]["stalls"] >= len(stalled)
        assert stats[a.url]["stalls"] == stats[b.url]["stalls"] == 0
        served_elsewhere = set(a.requests("200")) | set(b.requests("200"))
        assert set(stalled) <= served_elsewhere
        resent = {(r["blob"], r["from"]) for r in report["resends"]}
        assert {(blob, c.url) for blob in stalled} <= resent
        assert 0 < report["max_stall_detection_seconds"] < 5
        # ...and soon the silent mirror was suspect (silent before its
        # response) or ranked down (silent mid-body), and asked no more.
        assert len(stalled) < 20
        if mode == "no-response":
            assert stats[c.url]["health"] in ("suspect", "probe due")
        # Its connections were closed by the fetcher when the blob was
        # answered elsewhere, not when the fetcher exited.
        closes = [
            (float(m.group(1)), float(m.group(2)))
            for line in c.lines
            if (
                m := re.fullmatch(
                    r"connection \d+ closed while stalled after (\S+)s at (\S+)", line
                )
            )
        ]
        assert len(closes) == len(stalled)
        for after, at in closes:
            assert after < 5
            assert at < finished_at - 0.05


def test_a_slow_but_healthy_mirror_is_not_declared_stalled(tmp_path: Path) -> None:
    # Gaps between chunks vary from 33 ms to almost 1 s: far beyond what the
    # fast mirror shows, so the slow one's requests are hedged and mostly
    # answered first by the fast one, which is then asked first (the slow
    # one may even look suspect for a while, until a probe shows it alive);
    # but none of its requests is given up as a stall.
    slow = ("--latency-ms", "1500", "--latency-jitter-ms", "1400", "--chunks", "3", "--seed", "7")
    fast = ("--latency-ms", "40", "--chunks", "4")
    out = tmp_path / "out"
    with servers(slow, fast) as (s, f):
        done = fetch([s, f], out, "--count", "200", "--concurrency", "40", "--json")
        assert done.returncode == 0, done.stderr
        assert_blobs(out, 200)
        stats = json.loads(done.stdout)["mirrors"][s.url]
        # Whether it ever wins a race depends on the draw: the fast mirror's
        # backups usually answer first.  What must hold is that it keeps
        # being asked and is never given up.
        assert stats["requests"] >= 20
        assert stats["stalls"] <= stats["requests"] * 0.01
        assert stats["errors"] == 0
        assert stats["successes"] + stats["hedges_lost"] + stats["stalls"] == stats["requests"]
        # One request per connection (Connection: close), each closed.
        s.all_connections_closed()
        assert _opened(s.lines) == stats["requests"]


def test_hedging_sends_a_backup_to_another_mirror(tmp_path: Path) -> None:
    slow = ("--latency-ms", "3000", "--chunks", "2")  # headers after 1.5 s
    fast = ("--latency-ms", "40",)  # fmt: skip
    out = tmp_path / "out"
    with servers(slow, fast) as (s, f):
        done = fetch([s, f], out, "--count", "10", "--concurrency", "10", "--json")
        assert done.returncode == 0, done.stderr
        assert_blobs(out, 10)
        report = json.loads(done.stdout)
        stats = report["mirrors"]
        # Blobs 0, 2, 4... went to the slow mirror first, and were hedged:
        # a backup to the fast one, which answered first.
        assert stats[s.url]["hedges_lost"] == stats[f.url]["hedges_won"] == 5
        assert stats[s.url]["stalls"] == stats[s.url]["errors"] == 0
        assert stats[f.url]["successes"] == 10
        assert sorted(r["blob"] for r in report["resends"]) == [0, 2, 4, 6, 8]
        assert {r["how"] for r in report["resends"]} == {"hedge"}
        # The losing requests were cancelled: their connections closed.
        s.all_connections_closed()
        assert len(s.requests("200")) == 5


# -- the fetcher exits with nothing left behind -----------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_cancels_everything_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    slow = ("--latency-ms", "3000", "--chunks", "10", "--log-first-byte")
    out = tmp_path / "out"
    with servers(slow, slow) as mirrors:
        fetcher = subprocess.Popen(
            fetch_command(mirrors, out, "--count", "40", "--concurrency", "6"),
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Wait until six responses are on their way (temporary files
            # being written), then the signal.
            def bodies() -> int:
                return sum(
                    sum(1 for line in m.lines if line.endswith("first byte sent")) for m in mirrors
                )

            wait_until(lambda: bodies() >= 6, [m.lines for m in mirrors])
            fetcher.send_signal(signum)
            stdout, stderr = fetcher.communicate(timeout=WAIT)
        finally:
            if fetcher.poll() is None:
                fetcher.kill()
                fetcher.wait()
        assert fetcher.returncode == 128 + signum, stderr
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("interrupted:"), stderr
        assert "6 in flight cancelled" in lines[0] and "no partial files left" in lines[0]
        assert stdout == ""
        # No partial files, no temporary files.
        assert os.listdir(out) == []
        # Every connection the servers saw is closed.
        for m in mirrors:
            m.all_connections_closed()
            assert _opened(m.lines) >= 1


@pytest.mark.parametrize("healthy", [False, True], ids=["given-up", "hedged-around"])
def test_a_request_that_times_out_is_closed_before_main_returns(
    tmp_path: Path, healthy: bool
) -> None:
    """
    The last request is silent before its response: given up at its limit
    (alone), or dropped when a backup answered.  Its connection is closed
    before ``main()`` returns: the server sees the close while the process
    still runs.
    """
    timeouts = tmp_path / "fast.toml"
    timeouts.write_text('[kinds.blob]\npolicy = "hedge"\nidle.initial = "1s"\nidle.min = "1s"\n')
    configs = [("--stall-after", "0"), ("--latency-ms", "40")][: 1 + healthy]
    with servers(*configs) as mirrors:
        program = subprocess.Popen(
            [sys.executable, "-m", "tests.mirror_fetch_program", "--out", str(tmp_path / "out"),
             "--count", "1", "--timeouts", str(timeouts)]
            + [arg for m in mirrors for arg in ("--mirror", m.url)],
            cwd=ROOT, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert program.stdout is not None and program.stdin is not None
            said = program.stdout.readline()
            assert said == f"main returned {0 if healthy else 1}; sockets open: 0\n", said
            silent = mirrors[0]
            assert silent.requests("stalled") == [0]
            silent.all_connections_closed()  # while the fetcher is still alive
            assert program.poll() is None
            program.stdin.close()
            assert program.wait(timeout=WAIT) == (0 if healthy else 1)
        finally:
            if program.poll() is None:
                program.kill()
            program.wait()
            for pipe in (program.stdin, program.stdout, program.stderr):
                if pipe is not None:
                    pipe.close()


# -- errors ---------------------------------------------------------------------


def test_a_blob_no_mirror_can_serve_fails_the_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    modes = ("status", "short", "reset", "digest", "excess")
    configs = [("--fail-blobs", "2", "--fail-mode", mode) for mode in modes]
    with servers(*configs) as (status, short, reset, digest, excess):
        done = fetch([status, short, reset, digest, excess], out, "--count", "5", "--json")
        assert done.returncode == 1, done.stderr
        (message,) = [line for line in done.stderr.splitlines() if "blob 2" in line]
        assert "no mirror could serve it" in message
        assert f"{status.url}: HTTP 500" in message
        assert f"{short.url}: short body" in message
        assert f"{reset.url}: " in message
        assert f"{digest.url}: Repr-Digest mismatch" in message
        assert f"{excess.url}: 4096 bytes past the end of the response" in message
        assert sorted(os.listdir(out)) == ["0", "1", "3", "4"]
        report = json.loads(done.stdout)
        assert report["fetched"] == 4 and report["failed"] == 1
        assert all(m["errors"] == 1 for m in report["mirrors"].values())


@pytest.mark.parametrize("mode", ["excess", "digest"])
@pytest.mark.parametrize("chunks", ["1", "4"])
def test_a_body_that_is_not_the_blob_is_never_written(
    tmp_path: Path, mode: str, chunks: str
) -> None:
    """
    ``excess``: ``Content-Length`` (and the digest) say half the blob, and
    the whole blob follows, in the same write (one chunk) or later ones.
    ``digest``: the right bytes under a wrong ``Repr-Digest``.  Either way
    the mirror is broken for that blob: the fetcher fails over, and never
    writes what it sent.
    """
    out = tmp_path / "out"
    broken = ("--fail-blobs", "0,1,2,3", "--fail-mode", mode, "--chunks", chunks)
    with servers(broken, ("--latency-ms", "100")) as (bad, good):
        done = fetch([bad, good], out, "--count", "4", "--json")
        assert done.returncode == 0, done.stderr
        assert_blobs(out, 4)
        stats = json.loads(done.stdout)["mirrors"]
        assert stats[bad.url]["successes"] == 0
        assert stats[bad.url]["errors"] == stats[bad.url]["requests"] >= 2
        alone = fetch([bad], tmp_path / "alone", "--count", "1")
        assert alone.returncode == 1
        expected = {
            "excess": "bytes past the end of the response (Content-Length: 8192)",
            "digest": "Repr-Digest mismatch",
        }[mode]
        assert expected in alone.stderr
        assert os.listdir(tmp_path / "alone") == []


def _bad_timeouts(tmp_path: Path) -> Path:
    path = tmp_path / "timeouts.toml"
    path.write_text('[kinds.blob-body]\npolicy = "sometimes"\nidle.min = "fast"\n')
    return path


CASES: list[tuple[tuple[str, ...], list[str]]] = [
    (("--count", "3"), ["at least one --mirror"]),
    (("--mirror", "ftp://example.org", "--count", "3"), ["bad mirror URL", "ftp://example"]),
    (("--mirror", "http://", "--count", "3"), ["bad mirror URL 'http://'"]),
    (("--mirror", "http://host:99999", "--count", "3"), ["bad mirror URL", "host:99999"]),
    (("--mirror", "http://h/blobs", "--count", "3"), ["expected http(s)://host[:port]"]),
    (("--mirror", "http://h", "--count", "many"), ["--count", "'many' is not a whole number"]),
    (("--mirror", "http://h", "--count", "0"), ["--count", "'0' is not a positive number"]),
    (
        ("--mirror", "http://h", "--count", "3", "--out", "{file}/sub"),
        ["--out", "cannot write"],
    ),
    (
        ("--mirror", "http://h", "--count", "3", "--timeouts", "{timeouts}"),
        ["kinds.blob-body.policy", "'sometimes'", "kinds.blob-body.idle.min", "'fast'"],
    ),
    (
        ("--mirror", "http://h", "--count", "3", "--timeouts", "{tmp}/missing.toml"),
        ["--timeouts", "cannot read it"],
    ),
]


AS_PROCESS = [CASES[0][0], CASES[-2][0]]


@pytest.mark.parametrize(("args", "expected"), CASES)
def test_bad_command_lines_are_refused_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: list[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    values: dict[str, Any] = {
        "file": a_file,
        "timeouts": _bad_timeouts(tmp_path),
        "tmp": tmp_path,
    }
    argv = [arg.format(**values) for arg in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    # The program refuses them before it imports the reactor, so most cases
    # are checked in-process (fast); the first and the last also as a
    # process, for the real exit status and stderr.
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err
    if args in AS_PROCESS:
        done = run_fetch(*argv)
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        for text in expected:
            assert text in done.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_an_unwritable_output_directory_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = run_fetch("--mirror", "http://h", "--count", "1", "--out", str(locked))
    assert done.returncode == 2
    assert "cannot write there" in done.stderr
