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

import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
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
        self.peer.closed_while_program_alive = program is not None and program.ended is None


class Program(ProcessProtocol):
    """
    The program under test: its stdout lines, and how it ended.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Failure | None = None

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended = reason

    def lines(self) -> list[str]:
        return self.out.decode().splitlines()

    def said(self, line: str) -> bool:
        return line in self.lines()

    def __str__(self) -> str:
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
    program = Program()
    polite.program = rude.program = program
    args = ["--grace", str(GRACE), "--stop", stop]
    for port in (polite_port, polite_port, polite_port, rude_port):
        args += ["--peer", str(port)]
    process = reactor.spawnProcess(
        program,
        sys.executable,
        [sys.executable, "-m", "tests.service_shutdown_program", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        path=str(ROOT),
    )
    try:
        peers = polite.seen + rude.seen

        def all_hello() -> bool:
            seen = polite.seen + rude.seen
            return len(seen) == 4 and all(p.received == b"HELLO\n" for p in seen)

        iterate_until(all_hello, what=lambda: f"four sessions to say HELLO\n{program}")
        peers = polite.seen + rude.seen
        assert all(p.lost is None for p in peers)

        os.kill(process.pid, signal.SIGUSR1 if stop == "usr1" else signal.SIGTERM)
        iterate_until(
            lambda: program.said("reactor stopped") or program.ended is not None,
            what=lambda: f"the reactor to stop\n{program}",
        )
        assert program.ended is None, f"the program exited early\n{program}"
        # The program is alive, waiting on its stdin: every connection must
        # already be closed (or be closing: let this reactor see the FIN/RST).
        iterate_until(
            lambda: all(p.lost is not None for p in peers),
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
        if program.ended is None:
            process.closeStdin()
            iterate_until(lambda: program.ended is not None, what=lambda: f"exit\n{program}")
        for port in ports:
            port.stopListening()
    assert program.ended is not None and program.ended.value.exitCode == 0, program
    assert b"Traceback" not in program.err, program
