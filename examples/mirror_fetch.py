"""
Download blobs from several HTTP mirrors that can stall silently (the
Tahoe-LAFS case, over HTTP).

    python -m examples.mirror_fetch --mirror http://127.0.0.1:8001 \\
        --mirror http://127.0.0.1:8002 --count 100 --out blobs/ --json [--inspect 8080]

Blob ``i`` is ``GET {mirror}/blob/{i}``, written to ``OUT/i`` atomically (a
temporary file in ``OUT``, then ``os.replace``).  Each blob is one fsmcancel
operation (`blob_fetch_machine`) that owns its HTTP request:

``idle``
    Nothing yet.
``requesting`` (owns: the request)
    A `HedgedCall` of kind ``blob-headers`` over the mirrors not yet tried
    for this blob, healthiest first.  Its rule is the time-to-first-byte
    deadline (connect, send, response headers).  Under the ``hedge`` policy
    a backup request goes to the next mirror after the adaptive hedge delay;
    the first 200 wins and the other requests are cancelled (their
    connections aborted).  A stall, a refused or reset connection or a
    status other than 200 fails over to the next mirror, in this state.
``receiving`` (owns: the response body, the temporary file, the body call)
    A data state whose data is the `Download`.  The body is delivered chunk
    by chunk to a `BodyReceiver`; each chunk is written to the temporary file
    and reported as progress to a `GuardedCall` of kind ``blob-body``, so
    the idle timeout measures the silence since the last chunk.  On a stall
    or a broken or short body, leaving the state aborts the connection
    (detach the protocol, ``stopProducing`` on the transport), closes and
    deletes the temporary file, and the machine goes back to ``requesting``
    for the next mirror.
``done``
    The blob was renamed into place (success), or no mirror could serve it
    (`BlobUnavailable`, naming each mirror's error), or it was cancelled.

Timeouts come from a TOML file (``--timeouts``, default
``examples/mirror_timeouts.toml``) through ``fsmcancel.timeouts``: one
estimator per (mirror, kind).  Ctrl-C stops the ``OperationService`` that
tracks the operations, which cancels every one in flight ("service
stopping"); the releases delete the temporary files and abort the
connections, the pool's idle connections are closed, one summary line is
printed and the exit status is 130.  A second Ctrl-C stops waiting for
cleanup and forces what is left.  ``--inspect PORT`` serves the live
inspector page on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol, TextIO, cast
from urllib.parse import urlsplit

import structlog
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.iweb import IResponse

from examples._progress import ProgressLine
from fsmcancel import Cancellable, Operation, OperationBuilder, OperationService, Registry
from fsmcancel.timeouts import (
    ConfigError,
    GuardedCall,
    HedgedCall,
    TimedOut,
    TimeoutConfig,
    Timeouts,
    load_config,
)

HEADERS_KIND = "blob-headers"
BODY_KIND = "blob-body"
DEFAULT_TIMEOUTS = Path(__file__).with_name("mirror_timeouts.toml")
EXIT_INTERRUPTED = 130


# -- errors -------------------------------------------------------------------


class MirrorError(Exception):
    """What went wrong with one mirror for one blob, said for a human."""


class BlobUnavailable(Exception):
    """No mirror could serve a blob; ``errors`` has each mirror's error."""

    def __init__(self, index: int, errors: list[tuple[str, str]]) -> None:
        self.index = index
        self.errors = errors
        detail = "; ".join(f"{mirror}: {error}" for mirror, error in errors)
        super().__init__(f"blob {index}: no mirror could serve it ({detail})")


def describe_failure(failure: Failure) -> str:
    """A short human description of a request or body failure."""
    e = failure.value
    if isinstance(e, MirrorError):
        return str(e)
    reasons = getattr(e, "reasons", None)  # ResponseFailed & co wrap failures
    if reasons:
        inner = "; ".join(type(r.value).__name__ for r in reasons)
        return f"{type(e).__name__} ({inner})"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# -- per-mirror statistics and health ---------------------------------------------


@dataclass
class MirrorStats:
    requests: int = 0
    successes: int = 0
    stalls: int = 0
    errors: int = 0
    hedges_won: int = 0
    hedges_lost: int = 0
    # health, not reported: consecutive failures and when the mirror may
    # be tried first again
    failures_in_a_row: int = 0
    penalised_until: float = 0.0


class Mirrors:
    """
    The mirrors, their statistics, and the order in which to try them: blob
    ``i`` starts at mirror ``i mod M`` (to spread the load), and a mirror that
    just stalled or failed goes to the back for a cool-down that doubles with
    each failure in a row (1 s, 2 s, 4 s... at most 30 s).
    """

    def __init__(self, urls: Sequence[str], now: Callable[[], float]) -> None:
        self.urls = list(urls)
        self.stats = {url: MirrorStats() for url in self.urls}
        self.now = now
        self.max_stall_detection = 0.0

    def order(self, index: int, exclude: set[str]) -> list[str]:
        n = len(self.urls)
        rotated = [self.urls[(index + k) % n] for k in range(n)]
        now = self.now()
        candidates = [u for u in rotated if u not in exclude]
        return sorted(candidates, key=lambda u: self.stats[u].penalised_until > now)

    def good(self, url: str) -> None:
        s = self.stats[url]
        s.successes += 1
        s.failures_in_a_row = 0
        s.penalised_until = 0.0

    def bad(self, url: str, *, stall_detected_after: float | None = None) -> None:
        s = self.stats[url]
        if stall_detected_after is None:
            s.errors += 1
        else:
            s.stalls += 1
            self.max_stall_detection = max(self.max_stall_detection, stall_detected_after)
        s.failures_in_a_row += 1
        s.penalised_until = self.now() + min(30.0, 2.0 ** (s.failures_in_a_row - 1))

    def report(self) -> dict[str, dict[str, int]]:
        keys = ("requests", "successes", "stalls", "errors", "hedges_won", "hedges_lost")
        return {u: {k: getattr(self.stats[u], k) for k in keys} for u in self.urls}


# -- the operation --------------------------------------------------------------


class BlobFetch(Cancellable, Protocol):
    """
    The inputs of one blob's fetch.
    """

    def start(self) -> None: ...
    def answered(self, reply: Reply) -> None: ...
    def request_failed(self, reason: Failure) -> None: ...
    def request_stalled(self, timed_out: TimedOut) -> None: ...
    def exhausted(self) -> None: ...
    def body_done(self, size: int) -> None: ...
    def body_failed(self, reason: Failure) -> None: ...
    def stalled(self, timed_out: TimedOut) -> None: ...


@dataclass
class Reply:
    """A 200 response from ``mirror``, its body not read yet."""

    mirror: str
    response: IResponse


@dataclass
class Job:
    """
    The core: one blob, and what the fetcher shares with every blob.
    """

    index: int
    out: Path
    agent: Agent
    timeouts: Timeouts
    mirrors: Mirrors
    tried: set[str] = field(default_factory=set)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def url(self, mirror: str) -> bytes:
        return f"{mirror}/blob/{self.index}".encode()


Op = Operation[BlobFetch, Job]


class Race:
    """
    The requests of one ``requesting`` visit: what `HedgedCall` runs on each
    mirror it tries, and the per-mirror bookkeeping it does not do itself
    (it reports only the winner or the last outcome).
    """

    def __init__(self, op: Op) -> None:
        self.op = op
        self.call: HedgedCall[Reply] | None = None
        self.started: dict[str, float] = {}
        self.cancelled: list[str] = []  # attempts cancelled after the race was decided
        self.dropped: set[str] = set()  # attempts we cancelled, for any reason

    def attempt(self, mirror: str) -> Deferred[Reply]:
        job = self.op.core
        job.tried.add(mirror)
        job.mirrors.stats[mirror].requests += 1
        self.started[mirror] = self.op.clock.seconds()
        request = job.agent.request(b"GET", job.url(mirror))
        # Our own Deferred, so that we see who cancels it and when.
        attempt: Deferred[Reply] = Deferred(lambda _: self._cancelled(mirror, request))
        checked = request.addCallback(self._check, mirror)
        checked.addCallbacks(
            self._answered, self._failed, callbackArgs=(attempt,), errbackArgs=(attempt, mirror)
        )
        return attempt

    def _check(self, response: IResponse, mirror: str) -> Reply:
        if response.code != 200:
            cast(Any, response).deliverBody(Discard())
            raise MirrorError(f"HTTP {response.code} {response.phrase.decode(errors='replace')}")
        return Reply(mirror, response)

    def _answered(self, reply: Reply, attempt: Deferred[Reply]) -> None:
        if reply.mirror in self.dropped:
            cast(Any, reply.response).deliverBody(Discard())  # too late: drop it
        else:
            attempt.callback(reply)

    def _failed(self, failure: Failure, attempt: Deferred[Reply], mirror: str) -> None:
        if mirror in self.dropped:
            return  # we cancelled it: whatever the request says now is ours
        job = self.op.core
        job.errors.append((mirror, describe_failure(failure)))
        job.mirrors.bad(mirror)
        attempt.errback(failure)

    def _cancelled(self, mirror: str, request: Deferred[Any]) -> None:
        if self.call is None or not self.call.done:
            # Cancelled while the race goes on: only its timeout does that.
            job = self.op.core
            waited = self.op.clock.seconds() - self.started[mirror]
            job.errors.append((mirror, f"stalled: no response headers after {waited:.2f}s"))
            job.mirrors.bad(mirror, stall_detected_after=waited)
        else:
            self.cancelled.append(mirror)  # lost a race, or the blob was cancelled
        self.dropped.add(mirror)
        request.cancel()


class Discard(TwistedProtocol):
    """Drops the body of a response we do not want, and its connection."""

    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()


class BodyReceiver(TwistedProtocol):
    """
    Owns a 200 response from the moment it arrives: `start` has its body
    delivered here, written to a file chunk by chunk, each chunk reported as
    progress.  ``finished`` fires with the size, or fails for a broken or
    short body; cancelling it drops the connection.
    """

    def __init__(self, response: IResponse, clock: Callable[[], float]) -> None:
        self.response = response
        length = response.length
        self.expected = length if isinstance(length, int) else None
        self.file: IO[bytes] | None = None
        self.received = 0
        self.clock = clock
        self.last = clock()
        self.progress: Callable[[], object] | None = None
        self.started = False
        self.complete = False
        self.finished: Deferred[int] = Deferred(lambda _: self.abort())

    def start(self, file: IO[bytes]) -> Deferred[int]:
        self.file = file
        self.started = True
        cast(Any, self.response).deliverBody(self)
        return self.finished

    def dataReceived(self, data: bytes) -> None:
        if self.file is None:
            return
        self.file.write(data)
        self.received += len(data)
        self.last = self.clock()
        if self.progress is not None:
            self.progress()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if reason.check(ResponseDone):
            self.complete = True
        if self.file is None or self.finished.called:
            return
        if not self.complete:
            if self.expected is not None and self.received < self.expected:
                error = MirrorError(
                    f"short body: connection closed after {self.received} "
                    f"of {self.expected} bytes ({describe_failure(reason)})"
                )
                self.finished.errback(error)
            else:
                self.finished.errback(reason)
        elif self.expected is not None and self.received != self.expected:
            error = MirrorError(f"short body: {self.received} of {self.expected} bytes")
            self.finished.errback(error)
        else:
            self.finished.callback(self.received)

    def abort(self) -> None:
        """Drop the connection, unless the body is complete (then it is reused)."""
        if not self.started:
            self.started = True
            cast(Any, self.response).deliverBody(Discard())
        elif self.transport is not None and not self.complete:
            # A response body's transport is a producer; stopping it drops the
            # connection (it has no abortConnection).
            cast(IPushProducer, self.transport).stopProducing()

    def release(self) -> None:
        """
        What the state that owns the response does when it is left: stop
        writing, stop feeding the machine, drop the connection (unless the
        whole body was received).
        """
        self.file = None
        self.progress = None
        self.abort()


class TempFile:
    """
    A temporary file in the output directory, renamed into place by
    `commit` and deleted by `release` if it never was.
    """

    def __init__(self, directory: Path, index: int) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix=f".{index}.", suffix=".part")
        self.path = Path(name)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self.committed = False

    def commit(self, final: Path) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.path, final)
        self.committed = True

    def release(self) -> None:
        self.file.close()
        if not self.committed:
            self.path.unlink(missing_ok=True)


@dataclass
class Download:
    """The data of ``receiving``: what the body is being fetched with."""

    mirror: str
    temp: TempFile
    body: BodyReceiver
    call: GuardedCall[int]


log = structlog.get_logger("examples.mirror_fetch")

builder = OperationBuilder(BlobFetch, Job, name="blob-fetch", timeouts=DEFAULT_TIMEOUTS)
idle = builder.state("idle")
requesting = builder.state("requesting", resources=["request"])


def start_download(inputs: BlobFetch, op: Op, reply: Reply) -> Download:
    job = op.core
    # Own the response first: if anything below fails, releasing it still
    # drops its connection.
    body = op.own(
        BodyReceiver(reply.response, op.clock.seconds), BodyReceiver.release, name="response body"
    )
    temp = op.own(TempFile(job.out, job.index), TempFile.release, name="temporary file")
    call = job.timeouts.call(
        op,
        body.start,
        temp.file,
        kind=BODY_KIND,
        peer=reply.mirror,
        on_result=inputs.body_done,
        on_failure=inputs.body_failed,
        on_timeout=inputs.stalled,
    )
    body.progress = call.progress
    return Download(reply.mirror, temp, body, call)


receiving = builder.state(
    "receiving", start_download, resources=["response body", "temporary file", "body call"]
)
done = builder.terminal_state("done")
builder.timeout(BlobFetch.request_stalled, kind=HEADERS_KIND)
builder.timeout(BlobFetch.stalled, kind=BODY_KIND)


def next_mirror(inputs: BlobFetch, op: Op) -> None:
    """
    Request the blob from the mirrors not tried yet (the first of them, and
    more if hedging), or give up if none is left.
    """
    job = op.core
    mirrors = job.mirrors.order(job.index, job.tried)
    if not mirrors:
        inputs.exhausted()
        return
    race = Race(op)
    race.call = job.timeouts.hedged(
        op,
        race.attempt,
        kind=HEADERS_KIND,
        peers=mirrors,
        on_result=lambda reply: settle_race(race, reply, inputs),
        on_failure=inputs.request_failed,
        on_timeout=inputs.request_stalled,
    )


def settle_race(race: Race, reply: Reply, inputs: BlobFetch) -> None:
    stats = race.op.core.mirrors.stats
    losers = [m for m in race.cancelled if m != reply.mirror]
    if losers:
        stats[reply.mirror].hedges_won += 1
        for mirror in losers:
            stats[mirror].hedges_lost += 1
    inputs.answered(reply)


@idle.upon(BlobFetch.start).to(requesting)
def start(inputs: BlobFetch, op: Op) -> None:
    next_mirror(inputs, op)


requesting.upon(BlobFetch.answered).to(receiving).returns(None)


@requesting.upon(BlobFetch.request_failed).loop()
def request_failed(inputs: BlobFetch, op: Op, reason: Failure) -> None:
    # Race.attempt already recorded the mirror's error.
    next_mirror(inputs, op)


@requesting.upon(BlobFetch.request_stalled).loop()
def request_stalled(inputs: BlobFetch, op: Op, timed_out: TimedOut) -> None:
    log.info(
        "stall detected: no response",
        blob=op.core.index,
        mirror=timed_out.peer,
        rule=timed_out.rule,
        waited=round(timed_out.waited, 3),
        limit=round(timed_out.limit, 3),
    )
    next_mirror(inputs, op)


@requesting.upon(BlobFetch.exhausted).to(done)
def exhausted(inputs: BlobFetch, op: Op) -> None:
    op.fail(BlobUnavailable(op.core.index, op.core.errors))


@receiving.upon(BlobFetch.body_done).to(done)
def body_done(inputs: BlobFetch, op: Op, download: Download, size: int) -> None:
    download.temp.commit(op.core.out / str(op.core.index))
    op.core.mirrors.good(download.mirror)
    if op.core.errors:
        log.info("blob fetched after failover", blob=op.core.index, mirror=download.mirror)
    op.succeed(download.mirror)


@receiving.upon(BlobFetch.body_failed).to(requesting)
def body_failed(inputs: BlobFetch, op: Op, download: Download, reason: Failure) -> None:
    op.core.errors.append((download.mirror, describe_failure(reason)))
    op.core.mirrors.bad(download.mirror)
    next_mirror(inputs, op)


@receiving.upon(BlobFetch.stalled).to(requesting)
def stalled(inputs: BlobFetch, op: Op, download: Download, timed_out: TimedOut) -> None:
    silence = op.clock.seconds() - download.body.last
    op.core.errors.append(
        (
            download.mirror,
            f"stalled: no body data for {silence:.2f}s after {download.body.received} bytes",
        )
    )
    op.core.mirrors.bad(download.mirror, stall_detected_after=silence)
    log.info(
        "stall detected: body stopped",
        blob=op.core.index,
        mirror=download.mirror,
        rule=timed_out.rule,
        silent_for=round(silence, 3),
        limit=round(timed_out.limit, 3),
        received=download.body.received,
    )
    next_mirror(inputs, op)


idle.upon(BlobFetch.cancel).to(done).returns(None)
requesting.upon(BlobFetch.cancel).to(done).returns(None)
receiving.upon(BlobFetch.cancel).to(done).returns(None)

blob_fetch_machine = builder.build()


# -- the program -----------------------------------------------------------------


class Fetcher:
    """
    Runs up to ``concurrency`` blob operations at a time, and cancels them
    all on Ctrl-C (``operations``, an ``OperationService``).  ``registry``
    lists them for the inspector page.
    """

    def __init__(
        self,
        reactor: Any,
        mirrors: list[str],
        count: int,
        out: Path,
        concurrency: int,
        config: TimeoutConfig,
        progress: ProgressLine | None,
    ) -> None:
        self.reactor = reactor
        self.count = count
        self.out = out
        self.concurrency = concurrency
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = concurrency
        # Our requests are counted and guarded one by one: no silent retries.
        self.pool.retryAutomatically = False
        self.agent = Agent(reactor, pool=self.pool)
        self.timeouts = Timeouts(config)
        self.mirrors = Mirrors(mirrors, reactor.seconds)
        self.pending = deque(range(count))
        self.running: dict[int, Op] = {}
        self.fetched = 0
        self.failures: list[str] = []
        self.interrupted = False
        self.closing = False
        self.not_started = 0
        self.progress = progress
        self.show_progress = progress is not None
        self.operations = OperationService(clock=reactor)
        self.operations.startService()
        self.stopping: Deferred[None] | None = None
        self.registry = Registry(history=20)
        self.finished: Deferred[int] = Deferred()
        self.started = time.monotonic()

    def start(self) -> None:
        self._fill()

    def _fill(self) -> None:
        while self.pending and len(self.running) < self.concurrency and not self.interrupted:
            index = self.pending.popleft()
            job = Job(index, self.out, self.agent, self.timeouts, self.mirrors)
            op = blob_fetch_machine(job, clock=self.reactor, registry=self.registry)
            self.running[index] = op
            op.completion.addBoth(self._completed, index)
            op.inputs.start()
            self.operations.track(op)
        if not self.running:
            self._finish()

    def _completed(self, result: object, index: int) -> None:
        del self.running[index]
        if isinstance(result, Failure):
            if isinstance(result.value, BlobUnavailable):
                self.failures.append(str(result.value))
            elif not result.check(CancelledError):
                self.failures.append(f"blob {index}: {describe_failure(result)}")
        else:
            self.fetched += 1
        self._draw()
        self._fill()

    def interrupt(self) -> None:
        """Ctrl-C: cancel every operation (a second Ctrl-C forces them)."""
        if self.closing:
            return  # everything is done already: finish normally
        if self.stopping is not None:
            self.stopping.cancel()  # stop waiting for cleanup: force
            return
        self.interrupted = True
        self.not_started += len(self.pending)
        self.pending.clear()
        self.stopping = self.operations.stopService()

    def _finish(self) -> None:
        if self.closing:
            return
        self.closing = True
        self._draw(final=True)
        d = self.pool.closeCachedConnections()
        d.addBoth(lambda _: self.finished.callback(self.exit_status()))

    def exit_status(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return 1 if self.failures else 0

    def _draw(self, final: bool = False) -> None:
        if self.progress is None:
            return
        if final:
            self.progress.clear()
            return
        done = self.fetched + len(self.failures)
        width = 30
        filled = width * done // self.count
        stalls = sum(s.stalls for s in self.mirrors.stats.values())
        bar = "#" * filled + "." * (width - filled)
        self.progress.show(
            f"[{bar}] {done}/{self.count} blobs, {len(self.running)} in flight, {stalls} stalls"
        )

    def report(self) -> dict[str, object]:
        return {
            "fetched": self.fetched,
            "failed": len(self.failures),
            "mirrors": self.mirrors.report(),
            "max_stall_detection_seconds": round(self.mirrors.max_stall_detection, 3),
        }


# -- command line ----------------------------------------------------------------


def mirror_url(text: str) -> str:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad mirror URL {text!r}: {e}") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise argparse.ArgumentTypeError(f"bad mirror URL {text!r}: expected http(s)://host[:port]")
    del port
    return text.rstrip("/")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m examples.mirror_fetch",
        description="Download blobs 0..N-1 from HTTP mirrors, failing over on stalls.",
    )
    p.add_argument(
        "--mirror", type=mirror_url, action="append", default=[], metavar="URL",
        help="a mirror, http(s)://host[:port]; repeat for more",
    )  # fmt: skip
    p.add_argument("--count", type=positive_int, required=True, metavar="N")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--concurrency", type=positive_int, default=4, metavar="K")
    p.add_argument(
        "--timeouts", type=Path, default=None, metavar="FILE",
        help=f"timeouts TOML file (default: {DEFAULT_TIMEOUTS.name} next to this program)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    p.add_argument(
        "--inspect", type=int, default=None, metavar="PORT",
        help="serve the live inspector page on 127.0.0.1:PORT (0: any free port)",
    )  # fmt: skip
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="structlog events on stderr (default: warning; info shows stalls and failovers)",
    )
    return p


@dataclass
class Settings:
    mirrors: list[str]
    count: int
    out: Path
    concurrency: int
    config: TimeoutConfig
    json: bool
    log_level: str = "warning"
    inspect: int | None = None


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    p = parser()
    args = p.parse_args(argv)
    if not args.mirror:
        p.error("at least one --mirror URL is required")
    if len(set(args.mirror)) != len(args.mirror):
        p.error("the same --mirror is given twice")
    path = args.timeouts or DEFAULT_TIMEOUTS
    try:
        config = load_config(path)
    except ConfigError as e:
        p.error(f"--timeouts {path}: {e}")
    except OSError as e:
        p.error(f"--timeouts {path}: cannot read it: {e.strerror or e}")
    # Last, because it creates the directory.
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe, name = tempfile.mkstemp(dir=out, prefix=".probe.")
        os.close(probe)
        os.unlink(name)
    except OSError as e:
        p.error(f"--out {out}: cannot write there: {e.strerror or e}")
    return Settings(
        args.mirror,
        args.count,
        out,
        args.concurrency,
        config,
        args.json,
        args.log_level,
        args.inspect,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)

    import logging

    from twisted.internet import reactor as global_reactor

    from examples._servers import setup_logging

    # On a terminal, the progress bar; log lines go above it.
    progress = ProgressLine(sys.stderr) if sys.stderr.isatty() else None
    setup_logging(getattr(logging, settings.log_level.upper()), cast(TextIO, progress))
    reactor: Any = global_reactor  # Twisted's zope interfaces confuse mypy without a plugin
    fetcher = Fetcher(
        reactor,
        settings.mirrors,
        settings.count,
        settings.out,
        settings.concurrency,
        settings.config,
        progress,
    )
    if settings.inspect is not None:
        from fsmcancel.inspector import listen_inspector

        inspector = listen_inspector(fetcher.registry, settings.inspect, reactor=reactor)
        address: Any = inspector.getHost()
        print(f"inspector on http://{address.host}:{address.port}/", file=sys.stderr, flush=True)
    # Whatever stops the reactor, nothing is left running: the operations
    # are cancelled, and waited for, before it shuts down.
    reactor.addSystemEventTrigger("before", "shutdown", fetcher.operations.stopService)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(fetcher.interrupt)

    signal.signal(signal.SIGINT, on_sigint)
    status: list[int] = []

    def finished(code: int) -> None:
        status.append(code)
        reactor.stop()

    fetcher.finished.addCallback(finished)
    reactor.callWhenRunning(fetcher.start)
    reactor.run(installSignalHandlers=False)
    code = status[0] if status else 1

    if code == EXIT_INTERRUPTED:
        cancelled = settings.count - fetcher.fetched - len(fetcher.failures) - fetcher.not_started
        left = len(list(settings.out.glob(".*.part")))
        files = "no partial files left" if not left else f"{left} temporary files left behind!"
        print(
            f"interrupted: {fetcher.fetched} of {settings.count} blobs written, "
            f"{cancelled} in flight cancelled, {fetcher.not_started} not started; {files}",
            file=sys.stderr,
        )
    else:
        for failure in fetcher.failures:
            print(f"error: {failure}", file=sys.stderr)
        if fetcher.show_progress:
            elapsed = time.monotonic() - fetcher.started
            print(
                f"{fetcher.fetched} of {settings.count} blobs written to {settings.out} "
                f"in {elapsed:.1f}s",
                file=sys.stderr,
            )
    if settings.json:
        print(json.dumps(fetcher.report()))
    return code


if __name__ == "__main__":
    sys.exit(main())
