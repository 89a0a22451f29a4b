"""
A mirror for ``examples.mirror_fetch``: serves deterministic blobs over HTTP,
slowly, and can go silent like a host that vanished without a FIN or RST.

    python -m examples.mirror_server --port 0 --latency-ms 200 --chunks 4 \\
        --stall-after 5 --stall-mode mid-body

``GET /blob/{i}`` answers with ``blob_bytes(i, size)``.  The body is streamed in
``--chunks`` pieces spread over the latency, with ``callLater`` (the server
never blocks): the response headers and the first chunk after one step, each
further chunk one step later, a step being ``latency / chunks`` with its own
uniform jitter of ``± latency-jitter / chunks``.

After ``--stall-after K`` requests every further request stalls: with
``no-response`` the request is read and nothing is ever sent; with
``mid-body`` the headers and the first chunk are sent, then nothing.  A
stalled connection is never closed by the server: only the client can.

``--fail-blobs 2,5 --fail-mode status|short|reset`` makes those blobs fail
here: a 500, a body cut short (the connection closed before Content-Length
bytes were sent), or a reset connection.

Prints ``listening on 127.0.0.1:N`` (port 0 picks a free port), then one line
per request (``GET /blob/3 -> 200``, ``... -> stalled``, ``... -> 500``...)
and per connection (``connection 4 opened``, ``connection 4 closed``, with
``while stalled after 1.234s at T`` when a stalled request was pending, T
being ``time.monotonic()``), all flushed at once, so a test can follow the
server from its output.  ``--log-first-byte`` adds a line when each
response's headers and first chunk are sent.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet import reactor as global_reactor
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

DEFAULT_BLOB_SIZE = 16384
#: The global reactor; typed Any because mypy, without a zope plugin,
#: mis-binds the methods of Twisted's interfaces.
reactor: Any = global_reactor
_BLOB = re.compile(rb"/blob/(0|[1-9][0-9]{0,8})")


def blob_bytes(index: int, size: int = DEFAULT_BLOB_SIZE) -> bytes:
    """
    The content of blob ``index``: SHA-256 in counter mode over the index,
    ``size`` bytes long.  Every mirror serves the same bytes, so a client
    (or a test) can check what it received.
    """
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"blob {index} block {counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def say(line: str) -> None:
    print(line, flush=True)


@dataclass
class MirrorConfig:
    latency: float = 0.05
    jitter: float = 0.0
    chunks: int = 4
    stall_after: int | None = None
    stall_mode: str = "no-response"
    blob_size: int = DEFAULT_BLOB_SIZE
    fail_blobs: frozenset[int] = frozenset()
    fail_mode: str = "status"
    seed: int = 0
    log_first_byte: bool = False


@dataclass
class Mirror:
    """
    The server's state: the request counter, the random steps, the open
    connections.
    """

    config: MirrorConfig
    requests: int = 0
    connections: int = 0
    random: random.Random = field(default_factory=random.Random)

    def step(self) -> float:
        c = self.config
        base = c.latency / c.chunks
        spread = c.jitter / c.chunks
        return max(0.0, base + self.random.uniform(-spread, spread))


class Channel(HTTPChannel):
    """
    An HTTP connection that reports when it opens and closes, and whether a
    stalled request was still waiting when it did.
    """

    mirror: Mirror
    number = 0
    stalled_since: float | None = None

    def connectionMade(self) -> None:
        self.mirror.connections += 1
        self.number = self.mirror.connections
        say(f"connection {self.number} opened")
        super().connectionMade()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self.stalled_since is None:
            say(f"connection {self.number} closed")
        else:
            now = time.monotonic()
            waited = now - self.stalled_since
            say(f"connection {self.number} closed while stalled after {waited:.3f}s at {now:.3f}")
        super().connectionLost(reason)


class Blobs(Resource):
    isLeaf = True

    def __init__(self, mirror: Mirror) -> None:
        super().__init__()
        self.mirror = mirror

    def render_GET(self, request: Request) -> bytes | int:
        path = request.path
        m = _BLOB.fullmatch(path)
        what = f"GET {path.decode(errors='replace')}"
        if m is None:
            say(f"{what} -> 404")
            request.setResponseCode(404)
            return b"no such blob\n"
        index = int(m.group(1))
        mirror = self.mirror
        c = mirror.config
        mirror.requests += 1
        channel: Any = request.channel
        if c.stall_after is not None and mirror.requests > c.stall_after:
            say(f"{what} -> stalled")
            channel.stalled_since = time.monotonic()
            if c.stall_mode == "mid-body":
                Stream(request, mirror, blob_bytes(index, c.blob_size), stall=True).start()
            return NOT_DONE_YET
        if index in c.fail_blobs:
            if c.fail_mode == "status":
                say(f"{what} -> 500")
                request.setResponseCode(500)
                return b"this mirror has lost that blob\n"
            if c.fail_mode == "reset":
                say(f"{what} -> reset")
                channel.transport.abortConnection()
                return NOT_DONE_YET
            say(f"{what} -> short")
            Stream(request, mirror, blob_bytes(index, c.blob_size), short=True).start()
            return NOT_DONE_YET
        say(f"{what} -> 200")
        Stream(request, mirror, blob_bytes(index, c.blob_size)).start()
        return NOT_DONE_YET


class Stream:
    """
    One response body, sent chunk by chunk from timers; stops if the client
    goes away.
    """

    def __init__(
        self,
        request: Request,
        mirror: Mirror,
        body: bytes,
        *,
        stall: bool = False,
        short: bool = False,
    ) -> None:
        self.request = request
        self.mirror = mirror
        n = mirror.config.chunks
        size = -(-len(body) // n)
        self.chunks = [body[i : i + size] for i in range(0, len(body), size)]
        if stall:
            self.chunks = [*self.chunks[:1], b""]  # a last "chunk" that never comes
        if short:
            self.chunks = self.chunks[: max(1, len(self.chunks) // 2)]
        self.stall = stall
        self.short = short
        self.total = len(body)
        self.timer: Any = None
        self.gone = False
        self.first = True
        request.notifyFinish().addErrback(self.client_went_away)

    def start(self) -> None:
        self.request.setHeader(b"content-type", b"application/octet-stream")
        self.request.setHeader(b"content-length", str(self.total).encode())
        self.schedule()

    def schedule(self) -> None:
        self.timer = reactor.callLater(self.mirror.step(), self.send)

    def send(self) -> None:
        self.timer = None
        if self.gone:
            return
        chunk = self.chunks.pop(0)
        if self.stall and not self.chunks:
            return  # silent from now on, connection left open
        if self.first and self.mirror.config.log_first_byte:
            say(f"GET {self.request.path.decode(errors='replace')} first byte sent")
        self.first = False
        self.request.write(chunk)
        if self.chunks:
            self.schedule()
        elif self.short:
            cast(Any, self.request.channel).transport.loseConnection()
        else:
            self.request.finish()

    def client_went_away(self, reason: Failure) -> None:
        self.gone = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()


def _indices(text: str) -> frozenset[int]:
    try:
        values = frozenset(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected blob numbers like 2,5, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"blob numbers cannot be negative: {text!r}")
    return values


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m examples.mirror_server", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 (0: any free)")
    p.add_argument("--latency-ms", type=_non_negative, default=50.0)
    p.add_argument("--latency-jitter-ms", type=_non_negative, default=0.0)
    p.add_argument("--chunks", type=_positive_int, default=4)
    p.add_argument("--stall-after", type=int, default=None, metavar="K")
    p.add_argument("--stall-mode", choices=["no-response", "mid-body"], default="no-response")
    p.add_argument("--blob-size", type=_positive_int, default=DEFAULT_BLOB_SIZE)
    p.add_argument("--fail-blobs", type=_indices, default=frozenset(), metavar="I,J")
    p.add_argument("--fail-mode", choices=["status", "short", "reset"], default="status")
    p.add_argument("--seed", type=int, default=0, help="seed of the latency jitter")
    p.add_argument(
        "--log-first-byte", action="store_true", help="say when a response's first byte is sent"
    )
    args = p.parse_args(argv)
    if args.stall_after is not None and args.stall_after < 0:
        p.error(f"--stall-after must be >= 0, got {args.stall_after}")
    if args.blob_size < 2 and args.fail_mode == "short" and args.fail_blobs:
        p.error("--fail-mode short needs --blob-size of at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = MirrorConfig(
        latency=args.latency_ms / 1000,
        jitter=min(args.latency_jitter_ms, args.latency_ms) / 1000,
        chunks=args.chunks,
        stall_after=args.stall_after,
        stall_mode=args.stall_mode,
        blob_size=args.blob_size,
        fail_blobs=args.fail_blobs,
        fail_mode=args.fail_mode,
        log_first_byte=args.log_first_byte,
    )
    mirror = Mirror(config, random=random.Random(args.seed))
    site = Site(Blobs(mirror))
    site.displayTracebacks = False

    class MirrorChannel(Channel):
        pass

    MirrorChannel.mirror = mirror
    site.protocol = MirrorChannel  # type: ignore[assignment]
    port = reactor.listenTCP(args.port, site, interface="127.0.0.1")
    say(f"listening on 127.0.0.1:{port.getHost().port}")
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
