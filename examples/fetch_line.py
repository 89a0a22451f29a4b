"""
The README's example: fetch one line from a TCP server, cancellably.

    python -m examples.fetch_line

Runs a slow line server on 127.0.0.1, fetches from it once to completion,
then once more and cancels while the line is still on its way: the cancel
flows into the machine, the connection the ``reading`` state owns is
aborted, and the errback sees ``OperationCancelled`` only after that.
"""

from __future__ import annotations

import logging
import sys
import traceback
from dataclasses import dataclass
from typing import Protocol, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint, ITCPTransport
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from fsmcancel import Cancellable, Operation, OperationBuilder


class FetchLine(Cancellable, Protocol):
    """
    The inputs: what can happen to the operation.
    """

    def start(self) -> None: ...
    def connected(self, client: LineClient) -> None: ...
    def connect_failed(self, reason: Failure) -> None: ...
    def line(self, text: str) -> None: ...
    def lost(self, reason: Failure) -> None: ...


@dataclass
class Target:
    """
    The core: what the operation works on.
    """

    endpoint: IStreamClientEndpoint


Op = Operation[FetchLine, Target, str]  # the outcome is the line


class LineClient(LineReceiver):
    """
    Feeds what the connection does into the machine, until detached.
    """

    def __init__(self, inputs: FetchLine | None) -> None:
        self.inputs = inputs

    def lineReceived(self, line: bytes) -> None:
        if self.inputs is not None:
            self.inputs.line(line.decode())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.inputs is not None:
            self.inputs.lost(reason)

    def release(self) -> None:
        """
        What the state that owns this connection does when it is left:
        stop feeding the machine, and drop the connection now.
        """
        self.inputs = None
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()


builder = OperationBuilder(FetchLine, Target, name="fetch-line", outcome=str)
idle = builder.state("idle")
connecting = builder.state("connecting", resources=["connect attempt"])


def own_connection(inputs: FetchLine, op: Op, client: LineClient) -> LineClient:
    # A data state: this runs on entry, and its result is passed to every
    # behaviour that leaves "reading".
    return op.own(client, LineClient.release, name="connection")


reading = builder.state("reading", own_connection, resources=["connection"])
closing = builder.cleanup_state("closing", resources=["connection"])
done = builder.terminal_state("done")


@idle.upon(FetchLine.start).to(connecting)
def start(inputs: FetchLine, op: Op) -> None:
    connecting = op.core.endpoint.connect(Factory.forProtocol(lambda: LineClient(inputs)))
    # connect() is not generic over the protocol (zope interfaces can't say
    # so); ClientService makes the same cast.
    attempt = cast("Deferred[LineClient]", connecting)
    # Owned by "connecting": leaving it (say, on cancel) cancels the attempt,
    # and its outcome is fed in only while "connecting" owns it.
    op.watch(attempt, inputs.connected, inputs.connect_failed, name="connect attempt")


connecting.upon(FetchLine.connected).to(reading).returns(None)


@connecting.upon(FetchLine.connect_failed).to(done)
def connect_failed(inputs: FetchLine, op: Op, reason: Failure) -> None:
    op.fail(reason)


@reading.upon(FetchLine.line).to(closing)
def got_line(inputs: FetchLine, op: Op, client: LineClient, text: str) -> None:
    op.succeed(text)
    # Close politely; "closing" now owns the connection, so forcing (or the
    # cleanup grace running out) still aborts it.
    op.hand_over(client)
    if client.transport is not None:
        client.transport.loseConnection()


@reading.upon(FetchLine.lost).to(done)
def lost_early(inputs: FetchLine, op: Op, client: LineClient, reason: Failure) -> None:
    op.fail(reason)


closing.upon(FetchLine.lost).to(done).returns(None)
# One declaration for the three running states: cancelling any of them
# releases what it owns, and ends the operation.
(idle | connecting | reading).upon(FetchLine.cancel).to(done).returns(None)

fetch_line_machine = builder.build()


def fetch_line(endpoint: IStreamClientEndpoint) -> Op:
    """
    Start fetching one line from ``endpoint``.
    """
    op = fetch_line_machine(Target(endpoint))
    op.inputs.start()
    return op


def main(log_level: int = logging.INFO) -> int:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    from examples._servers import listen_slow_lines, setup_logging
    from fsmcancel import OperationService

    setup_logging(log_level)
    server = listen_slow_lines(delay=0.5)
    port = cast(IPv4Address, server.port.getHost()).port
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    outcome: list[str] = []
    # Whatever stops the reactor (Ctrl-C included), the operations still
    # running are cancelled, and their cleanup waited for, before it does.
    operations = OperationService()
    operations.startService()
    reactor.addSystemEventTrigger("before", "shutdown", operations.stopService)

    async def run() -> None:
        text = await operations.track(fetch_line(endpoint)).completion
        print(f"1. fetched: {text!r}")
        op = operations.track(fetch_line(endpoint))
        await deferLater(reactor, 0.2, lambda: None)
        print(f"2. cancelling while in state {op.state!r}, holding {list(op.resources)}")
        op.cancel("the user changed their mind")
        try:
            await op.completion
        except Exception as e:
            print(f"   errback: {type(e).__name__}: {e}")
        await server.disconnected.get()
        print(f"   the server saw the client hang up; open connections: {server.open}")
        outcome.append("ok")

    def finish(result: object) -> None:
        if isinstance(result, Failure):
            traceback.print_exception(result.value)
        reactor.stop()

    Deferred.fromCoroutine(run()).addBoth(finish)
    reactor.run()
    return 0 if outcome else 1


if __name__ == "__main__":
    sys.exit(main())
