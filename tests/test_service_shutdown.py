"""
Reactor shutdown with operations holding real connections: the peers see
every connection closed before the process exits.

The program (``tests/service_shutdown_program.py``) runs as a subprocess;
its peers are servers in this process on 127.0.0.1, driven by iterating the
reactor (``reactor_util``).  After ``reactor.run()`` returns, the program
waits for its standard input to close, so a close the peers see while it
waits was done by the program's operations, not by the kernel tearing the
process down.  Polite peers answer ``BYE`` by closing; a rude one never
does, and its session is forced when the grace period runs out.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from tests.reactor_util import iterate_until, reactor

ROOT = Path(__file__).resolve().parent.parent
GRACE = 1.0


@dataclass
class Peer:
    """
    One connection as the peer saw it.
    """

    received: bytes = b""
    lost: Failure | None = None
    closed_while_program_alive: bool | None = None


@dataclass
class Peers:
    polite: bool
    program: Program | None = None
    seen: list[Peer] = field(default_factory=list)


class PeerProtocol(Protocol):
    def __init__(self, peers: Peers) -> None:
        self.peers = peers
        self.peer = Peer()
        peers.seen.append(self.peer)

    def dataReceived(self, data: bytes) -> None:
        self.peer.received += data
        if self.peers.polite and self.peer.received.endswith(b"BYE\n"):
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.peer.lost = reason
        program = self.peers.program
        self.peer.closed_while_program_alive = program is not None and program.alive


class Program:
    """
    The program under test, and what it printed so far.

    A ``subprocess.Popen`` whose pipes are read without blocking, between
    iterations of this process's reactor: Twisted's ``spawnProcess`` learns
    that a child exited from SIGCHLD, whose handler only a running reactor
    installs, so under ``reactor.iterate`` it may never notice.
    """

    def __init__(self, args: list[str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.service_shutdown_program", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out = b""
        self.err = b""
        for pipe in (self.popen.stdout, self.popen.stderr):
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)

    def read(self) -> None:
        """
        Take what the program wrote (its debug log would fill a pipe).
        """
        for name, pipe in (("out", self.popen.stdout), ("err", self.popen.stderr)):
            assert pipe is not None
            with contextlib.suppress(BlockingIOError):
                while data := os.read(pipe.fileno(), 65536):
                    setattr(self, name, getattr(self, name) + data)

    def draining(self, condition: Callable[[], bool]) -> Callable[[], bool]:
        """
        ``condition``, checked after reading what the program wrote.
        """

        def check() -> bool:
            self.read()
            return condition()

        return check

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def lines(self) -> list[str]:
        self.read()
        return self.out.decode().splitlines()

    def said(self, line: str) -> bool:
        return line in self.lines()

    def exit(self) -> int:
        """
        Close its standard input (which it waits for), and wait for its exit.
        """
        self.popen.communicate(timeout=30)  # reads the rest, closes stdin
        return self.popen.returncode

    def __str__(self) -> str:
        self.read()
        return f"stdout: {self.out.decode()!r}\nstderr: {self.err.decode()!r}"


def listen(peers: Peers) -> Any:
    return reactor.listenTCP(
        0, Factory.forProtocol(lambda: PeerProtocol(peers)), interface="127.0.0.1"
    )


@pytest.mark.parametrize("stop", ["usr1", "term"])
def test_reactor_shutdown_closes_every_connection_before_exit(stop: str) -> None:
    polite, rude = Peers(polite=True), Peers(polite=False)
    ports = [listen(peers) for peers in (polite, rude)]
    polite_port, rude_port = (port.getHost().port for port in ports)
    args = ["--grace", str(GRACE), "--stop", stop]
    for port in (polite_port, polite_port, polite_port, rude_port):
        args += ["--peer", str(port)]
    program = Program(args)
    polite.program = rude.program = program
    try:
        peers = polite.seen + rude.seen

        def all_hello() -> bool:
            seen = polite.seen + rude.seen
            return len(seen) == 4 and all(p.received == b"HELLO\n" for p in seen)

        iterate_until(
            program.draining(all_hello),
            what=lambda: f"four sessions to say HELLO\n{program}",
        )
        peers = polite.seen + rude.seen
        assert all(p.lost is None for p in peers)

        program.popen.send_signal(signal.SIGUSR1 if stop == "usr1" else signal.SIGTERM)
        iterate_until(
            lambda: program.said("reactor stopped") or not program.alive,
            what=lambda: f"the reactor to stop\n{program}",
        )
        assert program.alive, f"the program exited early\n{program}"
        # The program is alive, waiting on its stdin: every connection must
        # already be closed (or be closing: let this reactor see the FIN/RST).
        iterate_until(
            program.draining(lambda: all(p.lost is not None for p in peers)),
            what=lambda: f"every peer to see its connection closed: {peers}",
        )
        assert all(p.closed_while_program_alive for p in peers), peers
        # Polite close: every session said BYE; the polite peers' answers
        # finished the cancel, the rude peer was forced after the grace period.
        assert all(p.received == b"HELLO\nBYE\n" for p in peers), peers
        outcomes = [json.loads(line) for line in program.lines() if line.startswith("{")]
        assert sorted(outcomes, key=lambda o: (o["peer"] == rude_port, o["forced"])) == [
            {
                "peer": polite_port,
                "outcome": "cancelled",
                "reason": "service stopping",
                "forced": False,
            }
        ] * 3 + [
            {
                "peer": rude_port,
                "outcome": "cancelled",
                "reason": "service stopping",
                "forced": True,
            }
        ]
    finally:
        status = program.exit()
        for port in ports:
            port.stopListening()
    assert status == 0, program
    assert b"Traceback" not in program.err, program
