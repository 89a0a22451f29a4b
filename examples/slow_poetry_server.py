"""
The seed's slow poetry server, without blocking the reactor.

    python -m examples.slow_poetry_server --port 10001 examples/poems/raven.txt

On connect, a client is sent the poem ``--chunk`` bytes at a time, one chunk
at once and one more every ``--delay`` seconds, then the connection is
closed.  Everything it does is printed to stdout, one line per event, so a
test (or a person watching the proxy cancel) can follow it::

    listening on 127.0.0.1:10001
    client 127.0.0.1:54321 connected
    sent 10 bytes to 127.0.0.1:54321
    ...
    client 127.0.0.1:54321 disconnected after 30 of 1135 bytes

A client that stays to the end gets ``client ... got all M bytes`` instead.

``--stall-after BYTES`` makes the server go silent, like a host that
vanished, once it has sent that many bytes (0: it accepts and never sends),
leaving the connection open; it says ``stalled 127.0.0.1:54321 after N
bytes``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure


def say(line: str) -> None:
    print(line, flush=True)


class SlowPoetry(Protocol):
    """
    Sends one poem slowly, then closes.
    """

    def __init__(
        self, reactor: Any, poem: bytes, delay: float, chunk: int, stall_after: int | None = None
    ) -> None:
        self.reactor = reactor
        self.poem = poem
        self.delay = delay
        self.chunk = chunk
        self.stall_after = stall_after
        self.sent = 0
        self.peer = "?"
        self.timer: Any = None

    def connectionMade(self) -> None:
        peer = self.transport_().getPeer()
        self.peer = f"{peer.host}:{peer.port}"
        say(f"client {self.peer} connected")
        self.send_chunk()

    def transport_(self) -> Any:
        # Untyped: Twisted's interfaces do not type-check without the zope plugin.
        return self.transport

    def send_chunk(self) -> None:
        self.timer = None
        if self.stall_after is not None and self.sent >= self.stall_after:
            say(f"stalled {self.peer} after {self.sent} bytes")
            return
        end = self.sent + self.chunk
        if self.stall_after is not None:
            end = min(end, self.stall_after)
        piece = self.poem[self.sent : end]
        self.transport_().write(piece)
        self.sent += len(piece)
        say(f"sent {len(piece)} bytes to {self.peer}")
        if self.sent < len(self.poem):
            self.timer = self.reactor.callLater(self.delay, self.send_chunk)
        else:
            say(f"client {self.peer} got all {len(self.poem)} bytes")
            self.transport_().loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sent < len(self.poem):
            say(f"client {self.peer} disconnected after {self.sent} of {len(self.poem)} bytes")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.slow_poetry_server",
        description="Serve a poem slowly, in chunks, to every client that connects.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument(
        "--interface", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--delay", type=float, default=0.7, help="seconds between chunks (default 0.7)"
    )
    parser.add_argument("--chunk", type=int, default=10, help="bytes per chunk (default 10)")
    parser.add_argument(
        "--stall-after", type=int, default=None, metavar="BYTES",
        help="go silent after sending that many bytes (0: send nothing), connection left open",
    )  # fmt: skip
    parser.add_argument("poem", type=Path, metavar="FILE", help="the poem to serve")
    args = parser.parse_args(argv)
    if args.chunk < 1:
        parser.error("--chunk must be at least 1")
    if args.delay < 0:
        parser.error("--delay cannot be negative")
    if args.stall_after is not None and args.stall_after < 0:
        parser.error("--stall-after cannot be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    args = parse_args(argv)
    poem = args.poem.read_bytes()
    factory = Factory.forProtocol(
        lambda: SlowPoetry(reactor, poem, args.delay, args.chunk, args.stall_after)
    )
    port = reactor.listenTCP(args.port, factory, interface=args.interface)
    address = port.getHost()
    say(f"listening on {address.host}:{address.port}")
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
