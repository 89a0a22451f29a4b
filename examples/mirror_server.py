"""
A mirror for ``examples.mirror_fetch``: serves deterministic blobs over HTTP,
slowly, and can go silent like a host that vanished without a FIN or RST.

    python -m examples.mirror_server --port 0 --latency-ms 40 --latency-sigma 0.8 \\
        --slow-share 0.05 --slow-ms 300:1500 --stall-share 0.1 --seed 3

``GET /blob/{i}`` answers with ``blob_bytes(i, size)`` and its RFC 9530
``Repr-Digest: sha-256=:<base64>:`` (``--no-digest`` leaves it out).  The
body is streamed in ``--chunks`` pieces spread over the request's latency,
with ``callLater`` (the server never blocks): the response headers and the
first chunk after one step, each further chunk one step later.  A request's
latency is ``--latency-ms``, or with ``--latency-sigma S`` lognormal with that
median; ``--latency-jitter-ms`` adds a uniform jitter of ``± jitter / chunks``
to each step.

Slow but alive: ``--slow-share P`` of the requests (at random) take
``--slow-ms LO:HI`` more (uniform), in one pause before the headers
(``--slow-where first-byte``) or before a chunk in the middle of the body
(``mid-body``).

Stalls: with ``--stall-after K`` every request after the K-th stalls; with
``--stall-share P`` each request stalls with probability P.  With
``--stall-mode no-response`` the request is read and nothing is ever sent;
with ``mid-body`` the headers and the first chunk are sent, then nothing.  A
stalled connection is never closed by the server: only the client can.
Every random draw comes from one generator seeded by ``--seed``.

``--fail-blobs 2,5 --fail-mode MODE`` makes those blobs fail here: ``status``
(a 500), ``short`` (the connection closed before Content-Length bytes were
sent), ``reset`` (a reset connection), ``digest`` (a Repr-Digest that does not
match the body) or ``excess`` (``Content-Length`` and ``Repr-Digest`` say
half the blob, and the whole blob is sent).

Prints ``listening on 127.0.0.1:N`` (port 0 picks a free port), then one line
per request (``GET /blob/3 -> 200``, ``... -> stalled``, ``... -> 500``...)
and per connection (``connection 4 opened``, ``connection 4 closed``, with
``while stalled after 1.234s at T`` when a stalled request was pending, T
being ``time.monotonic()``), all flushed at once, so a test can follow the
server from its output.  ``--log-first-byte`` adds a line when each
response's headers and first chunk are sent.  ``--log-times`` appends
`` at T`` to each request line and adds ``GET /blob/3 silent at T`` when a
stalled request's silence begins (on arrival, or after the first chunk), so
that the time from a mirror going silent to another mirror receiving the
same blob can be measured from the servers' side.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import math
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


def repr_digest(body: bytes) -> bytes:
    """The RFC 9530 ``Repr-Digest`` field value of ``body`` (sha-256)."""
    return b"sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()) + b":"


def say(line: str) -> None:
    print(line, flush=True)


@dataclass
class MirrorConfig:
    latency: float = 0.05
    sigma: float = 0.0
    jitter: float = 0.0
    chunks: int = 4
    slow_share: float = 0.0
    slow: tuple[float, float] = (0.3, 1.5)
    slow_where: str = "first-byte"
    stall_after: int | None = None
    stall_share: float = 0.0
    stall_mode: str = "no-response"
    blob_size: int = DEFAULT_BLOB_SIZE
    fail_blobs: frozenset[int] = frozenset()
    fail_mode: str = "status"
    digest: bool = True
    log_first_byte: bool = False
    log_times: bool = False


@dataclass
class Mirror:
    """
    The server's state: the request counter, the random draws, the open
    connections.
    """

    config: MirrorConfig
    requests: int = 0
    connections: int = 0
    random: random.Random = field(default_factory=random.Random)

    def steps(self) -> list[float]:
        """The delays before each chunk of one response (the first: the headers too)."""
        c = self.config
        latency = c.latency
        if c.sigma > 0:
            latency *= math.exp(c.sigma * self.random.gauss(0.0, 1.0))
        spread = c.jitter / c.chunks
        steps = [
            max(0.0, latency / c.chunks + self.random.uniform(-spread, spread))
            for _ in range(c.chunks)
        ]
        if c.slow_share and self.random.random() < c.slow_share:
            where = 0 if c.slow_where == "first-byte" or c.chunks == 1 else None
            if where is None:
                where = self.random.randrange(1, c.chunks)
            steps[where] += self.random.uniform(*c.slow)
        return steps

    def stalls(self) -> bool:
        """Does the request just counted stall?"""
        c = self.config
        if c.stall_after is not None and self.requests > c.stall_after:
            return True
        return bool(c.stall_share) and self.random.random() < c.stall_share

    def when(self) -> str:
        return f" at {time.monotonic():.6f}" if self.config.log_times else ""


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
        body = blob_bytes(index, c.blob_size)
        if mirror.stalls():
            say(f"{what} -> stalled{mirror.when()}")
            if c.stall_mode == "mid-body":
                Stream(request, mirror, body, stall=True).start()
            else:
                Stream.silent(request, mirror)
            return NOT_DONE_YET
        if index in c.fail_blobs and c.fail_mode not in ("digest", "excess"):
            if c.fail_mode == "status":
                say(f"{what} -> 500{mirror.when()}")
                request.setResponseCode(500)
                return b"this mirror has lost that blob\n"
            if c.fail_mode == "reset":
                say(f"{what} -> reset{mirror.when()}")
                cast(Any, request.channel).transport.abortConnection()
                return NOT_DONE_YET
            say(f"{what} -> short{mirror.when()}")
            Stream(request, mirror, body, short=True).start()
            return NOT_DONE_YET
        outcome = c.fail_mode if index in c.fail_blobs else "200"
        say(f"{what} -> {outcome}{mirror.when()}")
        Stream(request, mirror, body, fault=outcome).start()
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
        fault: str = "200",
    ) -> None:
        self.request = request
        self.mirror = mirror
        n = mirror.config.chunks
        size = -(-len(body) // n)
        self.chunks = [body[i : i + size] for i in range(0, len(body), size)]
        self.steps = mirror.steps()
        if stall:
            self.chunks = [*self.chunks[:1], b""]  # a last "chunk" that never comes
        if short:
            self.chunks = self.chunks[: max(1, len(self.chunks) // 2)]
        # What the headers declare: the whole blob, or half of it ("excess").
        self.declared = body[: len(body) // 2] if fault == "excess" else body
        self.digest = repr_digest(b"wrong" + body if fault == "digest" else self.declared)
        self.stall = stall
        self.short = short
        self.timer: Any = None
        self.gone = False
        self.sent = 0
        request.notifyFinish().addErrback(self.client_went_away)

    @staticmethod
    def silent(request: Request, mirror: Mirror) -> None:
        """A request that gets nothing, ever."""
        cast(Any, request.channel).stalled_since = time.monotonic()
        if mirror.config.log_times:
            say(f"GET {request.path.decode(errors='replace')} silent{mirror.when()}")

    def start(self) -> None:
        self.request.setHeader(b"content-type", b"application/octet-stream")
        self.request.setHeader(b"content-length", str(len(self.declared)).encode())
        if self.mirror.config.digest:
            self.request.setHeader(b"repr-digest", self.digest)
        self.schedule()

    def schedule(self) -> None:
        step = self.steps[min(self.sent, len(self.steps) - 1)]
        self.timer = reactor.callLater(step, self.send)

    def send(self) -> None:
        self.timer = None
        if self.gone:
            return
        chunk = self.chunks.pop(0)
        if not self.sent and self.mirror.config.log_first_byte:
            say(f"GET {self.request.path.decode(errors='replace')} first byte sent")
        self.sent += 1
        self.request.write(chunk)
        if self.stall and len(self.chunks) == 1:
            # Silent from now on, connection left open.
            Stream.silent(self.request, self.mirror)
        elif self.chunks:
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
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _share(text: str) -> float:
    value = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}")
    return value


def _range_ms(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise argparse.ArgumentTypeError
        lo, hi = _non_negative(low), _non_negative(high)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH in ms, got {text!r}") from None
    if lo > hi:
        raise argparse.ArgumentTypeError(f"expected LOW <= HIGH, got {text!r}")
    return lo / 1000, hi / 1000


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
    p.add_argument("--latency-sigma", type=_non_negative, default=0.0, metavar="S")
    p.add_argument("--latency-jitter-ms", type=_non_negative, default=0.0)
    p.add_argument("--chunks", type=_positive_int, default=4)
    p.add_argument("--slow-share", type=_share, default=0.0, metavar="P")
    p.add_argument("--slow-ms", type=_range_ms, default=(0.3, 1.5), metavar="LO:HI")
    p.add_argument("--slow-where", choices=["first-byte", "mid-body"], default="first-byte")
    p.add_argument("--stall-after", type=int, default=None, metavar="K")
    p.add_argument("--stall-share", type=_share, default=0.0, metavar="P")
    p.add_argument("--stall-mode", choices=["no-response", "mid-body"], default="no-response")
    p.add_argument("--blob-size", type=_positive_int, default=DEFAULT_BLOB_SIZE)
    p.add_argument("--fail-blobs", type=_indices, default=frozenset(), metavar="I,J")
    p.add_argument(
        "--fail-mode",
        choices=["status", "short", "reset", "digest", "excess"],
        default="status",
    )
    p.add_argument("--no-digest", action="store_true", help="send no Repr-Digest")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument(
        "--log-first-byte", action="store_true", help="say when a response's first byte is sent"
    )
    p.add_argument(
        "--log-times", action="store_true", help="say when requests arrive and stalls begin"
    )
    args = p.parse_args(argv)
    if args.stall_after is not None and args.stall_after < 0:
        p.error(f"--stall-after must be >= 0, got {args.stall_after}")
    if args.blob_size < 2 and args.fail_mode in ("short", "excess") and args.fail_blobs:
        p.error(f"--fail-mode {args.fail_mode} needs --blob-size of at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = MirrorConfig(
        latency=args.latency_ms / 1000,
        sigma=args.latency_sigma,
        jitter=min(args.latency_jitter_ms, args.latency_ms) / 1000,
        chunks=args.chunks,
        slow_share=args.slow_share,
        slow=args.slow_ms,
        slow_where=args.slow_where,
        stall_after=args.stall_after,
        stall_share=args.stall_share,
        stall_mode=args.stall_mode,
        blob_size=args.blob_size,
        fail_blobs=args.fail_blobs,
        fail_mode=args.fail_mode,
        digest=not args.no_digest,
        log_first_byte=args.log_first_byte,
        log_times=args.log_times,
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
