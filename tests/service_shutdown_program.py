"""
A Twisted program whose operations hold real connections when its reactor
is stopped; ``test_service_shutdown.py`` runs it.

    python -m tests.service_shutdown_program --peer PORT [--peer PORT ...]
        [--grace SECONDS] [--stop usr1|term]

Each ``--peer`` is one ``session`` operation, tracked by an
``OperationService`` in the application's ``MultiService``: it connects to
127.0.0.1:PORT, says ``HELLO``, and holds the connection.  Cancelling it
closes politely: it says ``BYE`` and waits (a cleanup state) for the peer
to close; forcing it aborts the connection.

A peer that has read ``HELLO`` knows its session holds the connection.
``SIGUSR1`` calls ``reactor.stop()``; ``SIGTERM`` goes through Twisted's own
handler, which does the same.  The application's ``stopService`` runs as a
"before shutdown" trigger, so the reactor waits for it.  When ``reactor.run()``
returns, the program prints each session's outcome as a JSON line and
``reactor stopped``, then waits for its standard input to close before it
exits: so a connection its peer sees closed before then was closed by the
program, not by the kernel at exit.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.application.service import MultiService
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure

from fsmcancel import Cancellable, Operation, OperationBuilder, OperationCancelled
from fsmcancel.service import OperationService


class Session(Cancellable, Protocol):
    def start(self) -> None: ...
    def connected(self, conn: Connection) -> None: ...
    def connect_failed(self, reason: Failure) -> None: ...
    def lost(self, reason: Failure) -> None: ...


@dataclass
class Target:
    endpoint: Any
    port: int


Op = Operation[Session, Target]


class Connection(TwistedProtocol):
    """
    Feeds the connection's loss into the machine; released by aborting.
    """

    def __init__(self, inputs: Session) -> None:
        self.inputs: Session | None = inputs

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.inputs is not None:
            self.inputs.lost(reason)

    def release(self) -> None:
        self.inputs = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()


_b = OperationBuilder(Session, Target, name="session")
idle = _b.state("idle")
connecting = _b.state("connecting", resources=["connect attempt"])


def hold(inputs: Session, op: Op, conn: Connection) -> Connection:
    op.own(conn, Connection.release, name="connection")
    transport: Any = conn.transport
    transport.write(b"HELLO\n")
    return conn


open_ = _b.state("open", hold, resources=["connection"])
saying_bye = _b.cleanup_state("saying bye", resources=["connection"])
done = _b.terminal_state("done")


@idle.upon(Session.start).to(connecting)
def _connect(inputs: Session, op: Op) -> None:
    attempt = op.core.endpoint.connect(Factory.forProtocol(lambda: Connection(inputs)))
    op.watch(attempt, inputs.connected, inputs.connect_failed, name="connect attempt")


connecting.upon(Session.connected).to(open_).returns(None)


@connecting.upon(Session.connect_failed).to(done)
def _connect_failed(inputs: Session, op: Op, reason: Failure) -> None:
    op.fail(reason)


@open_.upon(Session.cancel).to(saying_bye)
def _say_bye(inputs: Session, op: Op, conn: Connection, reason: str | None = None) -> None:
    op.hand_over(conn)
    transport: Any = conn.transport
    transport.write(b"BYE\n")


@open_.upon(Session.lost).to(done)
def _lost(inputs: Session, op: Op, conn: Connection, reason: Failure) -> None:
    op.fail(reason)


saying_bye.upon(Session.lost).to(done).returns(None)
idle.upon(Session.cancel).to(done).returns(None)
connecting.upon(Session.cancel).to(done).returns(None)

session = _b.build()


def describe(port: int, result: object) -> dict[str, object]:
    if isinstance(result, Failure) and isinstance(result.value, OperationCancelled):
        e = result.value
        return {"peer": port, "outcome": "cancelled", "reason": e.reason, "forced": e.forced}
    return {"peer": port, "outcome": repr(result)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", type=int, action="append", required=True)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--stop", choices=["usr1", "term"], default="usr1")
    args = parser.parse_args(argv)

    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    application = MultiService()
    operations = OperationService(grace=args.grace)
    operations.setServiceParent(application)
    application.startService()
    reactor.addSystemEventTrigger("before", "shutdown", application.stopService)

    outcomes: list[dict[str, object]] = []

    def record(result: object, port: int) -> None:
        outcomes.append(describe(port, result))

    for port in args.peer:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        op = operations.track(session(Target(endpoint, port)))
        op.completion.addBoth(record, port)
        op.inputs.start()

    if args.stop == "usr1":
        signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run()
    for line in sorted(outcomes, key=lambda o: str(o)):
        print(json.dumps(line))
    print("reactor stopped", flush=True)
    sys.stdin.read()  # until the test closes our standard input
    return 0


if __name__ == "__main__":
    sys.exit(main())
