"""
The examples as applications: they stop through ``OperationService``,
serve the inspector with ``--inspect PORT``, and on a terminal keep their
progress bar and their log lines on separate lines.

Real processes on 127.0.0.1; every wait is for a line a program prints.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pty
import re
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, TextIO, cast

import structlog

from examples._progress import ProgressLine
from tests.test_mirror import ENV, ROOT, fetch_command, servers, wait_until
from tests.test_poetry_proxy import (
    CONNECTED,
    DISCONNECTED,
    TIMEOUT,
    Spawn,
    connect,
    proxy,
    read_all,
    slow_server,
    spawn,
)

__all__ = ["spawn"]  # the fixture, imported for this module's tests


def get_json(url: str) -> Any:
    # The inspector is another process: a blocking client is fine here.
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.headers["content-type"] == "application/json"
        return json.load(response)


# -- shutdown ----------------------------------------------------------------------


def test_the_proxy_stops_by_cancelling_its_requests(spawn: Spawn) -> None:
    server = slow_server(spawn, delay=5.0, chunk=10)  # would take minutes
    poetry_proxy = proxy(spawn, server.port)
    clients = [connect(poetry_proxy.port), connect(poetry_proxy.port)]
    poetry_proxy.expect(r"\bsubscribed\b.*subscribers=2\b", "err")
    server.expect(CONNECTED)

    poetry_proxy.proc.send_signal(signal.SIGTERM)  # as systemd or `kill` would
    for _ in clients:
        poetry_proxy.expect(r"\bcancel\b.*reason='service stopping'.*state=waiting", "err")
    poetry_proxy.expect(r"\blast subscriber left: cancelling download\b", "err")
    _, disconnected = server.expect(DISCONNECTED)  # the upstream was closed
    assert int(disconnected[1]) < int(disconnected[2])
    assert poetry_proxy.proc.wait(timeout=TIMEOUT) == 0
    for client in clients:
        # Closed (aborted: the request's release drops the connection),
        # without a poem.
        with contextlib.suppress(ConnectionResetError):
            assert read_all(client) == b""
    assert not any("Traceback" in line for line in poetry_proxy.printed("err"))


# -- --inspect ---------------------------------------------------------------------


def test_the_proxy_serves_the_inspector(spawn: Spawn) -> None:
    server = slow_server(spawn, delay=5.0, chunk=10)
    poetry_proxy = spawn(
        "examples.poetry_proxy", "--port=0", f"--upstream=127.0.0.1:{server.port}", "--inspect=0"
    )
    url = poetry_proxy.expect(r"^inspector on (http://127\.0\.0\.1:\d+/)$")[1].group(1)
    client = connect(poetry_proxy.port)
    try:
        server.expect(CONNECTED)
        server.expect(r"^sent 10 bytes to ")
        live = get_json(url + "operations.json")["operations"]
        states = sorted((o["machine"], o["state"], tuple(o["resources"])) for o in live)
        assert states == [
            ("poem-download", "receiving", ("upstream connection", "poem")),
            ("proxy-request", "waiting", ("client connection", "subscription", "poem")),
        ]
        download = next(o for o in live if o["machine"] == "poem-download")
        detail = get_json(f"{url}operations/{download['id']}")
        steps = [(h["old"], h["input"], h["new"]) for h in detail["history"]]
        assert steps[:2] == [
            ("idle", "start", "connecting"),
            ("connecting", "connected", "receiving"),
        ]
    finally:
        client.close()


def test_mirror_fetch_serves_the_inspector(tmp_path: Path) -> None:
    slow = ("--latency-ms", "3000", "--chunks", "10", "--log-first-byte")
    with servers(slow) as (mirror,):
        fetcher = subprocess.Popen(
            fetch_command([mirror], tmp_path / "out", "--count", "3", "--inspect", "0"),
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert fetcher.stderr is not None
            said = fetcher.stderr.readline().strip()
            match = re.fullmatch(r"inspector on (http://127\.0\.0\.1:\d+/)", said)
            assert match, said
            wait_until(
                lambda: sum(line.endswith("first byte sent") for line in mirror.lines) >= 3,
                mirror.lines,
            )
            live = get_json(match.group(1) + "operations.json")["operations"]
            assert [o["machine"] for o in live] == ["mirror-fetch"] + ["blob-fetch"] * 3
            # The run owns its blobs (a child group); each blob races the
            # mirror: its hedged call, and an attempt per request.
            assert (live[0]["state"], live[0]["resources"]) == ("fetching", ["blobs"])
            for o in live[1:]:
                assert o["state"] == "fetching", o
                assert o["resources"][0] == "hedged blob call", o
                assert set(o["resources"][1:]) == {"attempt"}, o
            fetcher.send_signal(signal.SIGINT)
            _, stderr = fetcher.communicate(timeout=TIMEOUT)
            assert fetcher.returncode == 130, stderr
            assert "3 in flight cancelled" in stderr and "no partial files left" in stderr
        finally:
            if fetcher.poll() is None:
                fetcher.kill()
                fetcher.communicate()


# -- the progress bar on a terminal ---------------------------------------------------


def screen(written: str) -> list[str]:
    """
    The lines a terminal shows after ``written``: carriage return, newline
    and erase-to-end-of-line (``ESC [ K``) are obeyed, colours ignored.
    """
    lines: list[str] = []
    line: list[str] = []
    col = 0
    for token in re.findall(r"\x1b\[[0-9;]*[A-Za-z]|\r|\n|[^\x1b\r\n]", written):
        if token == "\r":
            col = 0
        elif token == "\n":
            lines.append("".join(line))
            line, col = [], 0
        elif token == "\x1b[K":
            del line[col:]
        elif token.startswith("\x1b["):
            continue  # colours
        else:
            if col < len(line):
                line[col] = token
            else:
                line.append(token)
            col += 1
    return [*lines, "".join(line)]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_go_above_the_bar() -> None:
    terminal = FakeTerminal()
    progress = ProgressLine(terminal)
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, progress)),
    )
    try:
        log = structlog.get_logger("test")
        progress.show("[###.......] 3/10 blobs")
        log.info("stall detected", blob=4)
        progress.show("[####......] 4/10 blobs")
        log.info("blob fetched after failover", blob=4)
        log.info("another")
    finally:
        structlog.reset_defaults()
    assert screen(terminal.getvalue()) == [
        "event='stall detected' blob=4",
        "event='blob fetched after failover' blob=4",
        "event='another'",
        "[####......] 4/10 blobs",
    ]
    progress.clear()
    assert screen(terminal.getvalue())[-1] == ""


def test_mirror_fetch_on_a_terminal_keeps_bar_and_log_apart(tmp_path: Path) -> None:
    with servers(("--latency-ms", "60", "--chunks", "2")) as (mirror,):
        terminal, child_side = pty.openpty()
        try:
            fetcher = subprocess.Popen(
                fetch_command([mirror], tmp_path / "out", "--count", "6", "--log-level", "debug"),
                cwd=ROOT,
                env={**ENV, "TERM": "xterm", "COLUMNS": "200"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=child_side,
            )
        finally:
            os.close(child_side)
        written = read_terminal(terminal)
        assert fetcher.wait(timeout=TIMEOUT) == 0
    lines = [line for line in screen(written.decode(errors="replace")) if line.strip()]
    bars = [line for line in lines if "blobs," in line]
    logs = [line for line in lines if "transition" in line]
    assert logs, lines  # debug logging really ran alongside the bar
    assert all("[" in line and "transition" not in line for line in bars), bars
    assert all("blobs," not in line for line in logs), logs
    assert lines[-1].startswith("6 of 6 blobs written"), lines[-3:]


def read_terminal(fd: int) -> bytes:
    """
    Everything written to the terminal until the program closes it.
    """
    chunks = []
    try:
        while data := os.read(fd, 65536):
            chunks.append(data)
    except OSError:  # EIO: the other side is closed
        pass
    finally:
        os.close(fd)
    return b"".join(chunks)
