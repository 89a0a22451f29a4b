"""
One blob from several HTTP mirrors that can stall silently: the
``blob-fetch`` machine that ``examples.mirror_fetch`` runs for each blob.

Blob ``i`` is ``GET {mirror}/blob/{i}`` (`examples.strict_http`), written to
``OUT/i`` atomically (a temporary file in ``OUT``, then ``os.replace``).

``idle``
    Nothing yet.
``fetching`` (owns: the hedged call, one attempt per mirror asked)
    A race: ``Timeouts.hedged`` over the mirrors this blob has not failed
    on, ranked by ``Timeouts.rank`` (suspect mirrors last; blob ``i`` starts
    at mirror ``i mod M`` otherwise, to spread the load).  Each attempt is a
    connection and its own temporary file; every read is a sign of life.
    When the newest attempt has been silent for longer than the learned
    hedge delay (before its response, or mid-body), the same GET goes to the
    next mirror, and the silent one keeps running: the first complete,
    verified body wins and the others are dropped.  Each attempt is given
    up only at its own (conservative) idle limit.  An attempt that fails
    (refused, reset, not 200, short, too long, digest mismatch) or is given
    up makes its mirror "failed" for this blob; when no attempt is left, the
    machine races again over the mirrors left (a guarded transition), or
    ends.
``done``
    The blob was renamed into place (the outcome: the winning mirror), or
    no mirror could serve it (`BlobUnavailable`, naming each mirror's
    error), or it was cancelled.

Leaving ``fetching`` drops every connection still open and deletes every
temporary file not renamed; the operation completes only once those
sockets are closed.  What a run shares (the mirrors, the `Timeouts` that
learn about them, the per-mirror figures) is a `Mirrors`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import structlog
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from examples.strict_http import HTTPError, StrictGet, endpoint_for, host_header
from fsmcancel import Cancellable, Operation, OperationBuilder
from fsmcancel.timeouts import HedgedCall, TimedOut, Timeouts

KIND = "blob"
SUSPECT = ("suspect", "probe due", "probing")
DEFAULT_TIMEOUTS = Path(__file__).with_name("mirror_timeouts.toml")

log = structlog.get_logger("examples.mirror_fetch")


class BlobUnavailable(Exception):
    """No mirror could serve a blob; ``errors`` has each mirror's error."""

    def __init__(self, index: int, errors: dict[str, str]) -> None:
        self.index = index
        self.errors = errors
        detail = "; ".join(f"{mirror}: {error}" for mirror, error in errors.items())
        super().__init__(f"blob {index}: no mirror could serve it ({detail})")


def describe_failure(failure: Failure) -> str:
    """A short human description of why an attempt failed."""
    e = failure.value
    text = str(e)
    if isinstance(e, HTTPError):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass
class MirrorStats:
    """What one mirror did in a run (for the report; health is the `Timeouts`' business)."""

    requests: int = 0
    successes: int = 0
    stalls: int = 0  # attempts given up at their idle limit
    errors: int = 0
    hedges_won: int = 0
    hedges_lost: int = 0  # attempts dropped because another mirror answered first


@dataclass(frozen=True)
class Resend:
    """A blob asked of ``target`` because ``source`` had been silent ``silent_for`` seconds."""

    blob: int
    source: str
    target: str
    silent_for: float
    how: str  # "hedge": a backup while it kept running; "timeout": after it was given up


@dataclass
class Mirrors:
    """
    What every blob of a run shares: the mirrors, the `Timeouts` that learn
    about them, where blobs go, and the figures the run reports.
    """

    urls: list[str]
    out: Path
    timeouts: Timeouts
    reactor: Any
    stats: dict[str, MirrorStats] = field(default_factory=dict)
    resends: list[Resend] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stats = {url: MirrorStats() for url in self.urls}

    def order(self, index: int, exclude: dict[str, str]) -> list[str]:
        """
        The mirrors to race for blob ``index``: those not suspect, fewest
        recent stalls first (blob ``i`` starts at mirror ``i mod M`` among
        equals, to spread the load); suspect ones only if no other is left,
        or first when one is due for its probe (`Timeouts.rank`).
        """
        n = len(self.urls)
        rotated = [self.urls[(index + k) % n] for k in range(n)]
        ranked = self.timeouts.rank(KIND, [url for url in rotated if url not in exclude])
        trusted = [url for url in ranked if self.timeouts.health(url).state not in SUSPECT]
        if not trusted:
            return ranked
        return trusted if ranked[0] in trusted else [ranked[0], *trusted]


class BlobFetch(Cancellable, Protocol):
    """The inputs of one blob's fetch."""

    def start(self) -> None: ...
    def fetched(self, attempt: Attempt) -> None: ...
    def race_failed(self, reason: Failure) -> None: ...
    def race_timed_out(self, timed_out: TimedOut) -> None: ...


@dataclass
class Blob:
    """The core: one blob, and what the run shares."""

    index: int
    run: Mirrors
    failed: dict[str, str] = field(default_factory=dict)  # mirror -> its error, in order
    race: HedgedCall[Attempt] | None = None
    attempts: list[Attempt] = field(default_factory=list)  # of the current race
    previous: list[Attempt] = field(default_factory=list)  # of the race before
    first: str | None = None  # the mirror asked first


Op = Operation[BlobFetch, Blob, str]


class TempFile:
    """A temporary file in ``directory``, renamed by `commit`, else deleted by `release`."""

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


class Attempt:
    """
    One mirror's attempt at one blob, as a `StrictGet`'s listener: the
    connection, the temporary file its body goes to, its last sign of life.
    ``outcome`` is None while it runs, then ``ok``, ``error``, ``stalled``
    (given up at its limit) or ``cancelled`` (lost the race, or released).
    """

    def __init__(self, op: Op, mirror: str) -> None:
        self.op = op
        self.mirror = mirror
        self.started = self.last = op.clock.seconds()
        self.received = 0
        self.temp: TempFile | None = None
        self.get: StrictGet | None = None
        self.connecting: Deferred[Any] | None = None
        self.outcome: str | None = None
        self.deferred: Deferred[Attempt] = Deferred(self._cancelled)

    def start(self) -> Deferred[Attempt]:
        blob = self.op.core
        path = f"/blob/{blob.index}".encode()

        def get() -> StrictGet:
            return StrictGet(host_header(self.mirror), path, self, self.op.clock.callLater)

        self.connecting = endpoint_for(self.mirror, blob.run.reactor).connect(
            Factory.forProtocol(get)
        )
        self.connecting.addCallbacks(self._connected, self._failed)
        return self.deferred

    # -- what the GET reports (Listener)

    def alive(self) -> None:
        self.last = self.op.clock.seconds()
        race = self.op.core.race
        if race is not None:
            race.progress(self.mirror)

    def data(self, chunk: bytes) -> None:
        if self.temp is None:
            self.temp = TempFile(self.op.core.run.out, self.op.core.index)
        self.temp.file.write(chunk)
        self.received += len(chunk)

    # -- how it ends

    def _connected(self, get: StrictGet) -> None:
        self.connecting = None
        self.get = get
        get.done.addCallbacks(self._finished, self._failed)

    def _finished(self, size: int) -> None:
        if self.outcome is None:
            self.outcome = "ok"
            self.deferred.callback(self)

    def _failed(self, failure: Failure) -> None:
        self.connecting = None
        if self.outcome is not None:
            return  # we gave it up: whatever it says now is ours
        self.outcome = "error"
        blob = self.op.core
        error = blob.failed[self.mirror] = describe_failure(failure)
        blob.run.stats[self.mirror].errors += 1
        log.info("mirror failed", blob=blob.index, mirror=self.mirror, error=error)
        self.deferred.errback(failure)

    def _cancelled(self, _: Deferred[Attempt]) -> None:
        if self.outcome is None:
            # Only an attempt's own timeout cancels it while its race goes
            # on; losing the race or leaving the state ends the race first.
            race = self.op.core.race
            self.outcome = "stalled" if race is not None and not race.done else "cancelled"
            if self.outcome == "stalled":
                blob = self.op.core
                silence = self.op.clock.seconds() - self.last
                blob.failed[self.mirror] = (
                    f"stalled: silent for {silence:.2f}s after {self.received} bytes"
                )
                blob.run.stats[self.mirror].stalls += 1
        self.abort()

    def abort(self) -> Deferred[None] | None:
        """Drop the connection and the temporary file; wait for the socket to close."""
        if self.connecting is not None:
            self.connecting.cancel()
        if self.temp is not None:
            self.temp.release()
        return None if self.get is None else self.get.abort()

    def release(self) -> Deferred[None] | None:
        """What ``fetching`` does with its attempts when it is left."""
        if self.outcome is None:
            self.outcome = "cancelled"
        return self.abort()

    def commit(self, final: Path) -> None:
        if self.temp is None:  # an empty blob
            self.temp = TempFile(self.op.core.run.out, self.op.core.index)
        self.temp.commit(final)


def launch(mirror: str, op: Op) -> Deferred[Attempt]:
    """
    Ask ``mirror`` for the blob: the function `HedgedCall` runs on each
    mirror it tries.  A launch while an attempt runs is a backup for the
    newest one, which has been silent past the hedge delay.
    """
    blob = op.core
    now = op.clock.seconds()
    live = [a for a in blob.attempts if a.outcome is None]
    given_up = [a for a in blob.previous if a.outcome == "stalled"]
    if live or given_up:
        silent, how = (live[-1], "hedge") if live else (given_up[-1], "timeout")
        resend = Resend(blob.index, silent.mirror, mirror, now - silent.last, how)
        blob.run.resends.append(resend)
        log.info("stall detected", blob=blob.index, mirror=silent.mirror, then=how,
                 silent_for=round(resend.silent_for, 3), asking=mirror)  # fmt: skip
    blob.previous = []
    attempt = op.own(Attempt(op, mirror), Attempt.release, name="attempt")
    blob.attempts.append(attempt)
    blob.run.stats[mirror].requests += 1
    blob.first = blob.first or mirror
    return attempt.start()


builder = OperationBuilder(
    BlobFetch, Blob, name="blob-fetch", timeouts=DEFAULT_TIMEOUTS, outcome=str
)
idle = builder.state("idle")
fetching = builder.state("fetching", resources=["hedged blob call", "attempt"])
done = builder.terminal_state("done")
builder.timeout(BlobFetch.race_timed_out, kind=KIND)


def race(inputs: BlobFetch, op: Op, *_: object, **__: object) -> None:
    """Race the mirrors this blob has not failed on."""
    blob = op.core
    blob.previous, blob.attempts = blob.attempts, []
    blob.race = blob.run.timeouts.hedged(
        op,
        launch,
        op,
        kind=KIND,
        peers=blob.run.order(blob.index, blob.failed),
        on_result=inputs.fetched,
        on_failure=inputs.race_failed,
        on_timeout=inputs.race_timed_out,
    )


def mirrors_left(inputs: BlobFetch, op: Op, *_: object, **__: object) -> bool:
    return any(url not in op.core.failed for url in op.core.run.urls)


def no_mirror_left(inputs: BlobFetch, op: Op, *_: object, **__: object) -> None:
    op.fail(BlobUnavailable(op.core.index, op.core.failed))


@idle.upon(BlobFetch.start).to(fetching)
def start(inputs: BlobFetch, op: Op) -> None:
    race(inputs, op)


@fetching.upon(BlobFetch.fetched).to(done)
def fetched(inputs: BlobFetch, op: Op, attempt: Attempt) -> None:
    blob = op.core
    attempt.commit(blob.run.out / str(blob.index))
    stats = blob.run.stats
    stats[attempt.mirror].successes += 1
    losers = blob.race.losers if blob.race is not None else []
    if losers:
        stats[attempt.mirror].hedges_won += 1
        for mirror in losers:
            stats[mirror].hedges_lost += 1
    if attempt.mirror != blob.first:
        log.info("blob fetched after failover", blob=blob.index, mirror=attempt.mirror)
    op.succeed(attempt.mirror)


fetching.upon(BlobFetch.race_failed).to(fetching, when=mirrors_left)(race)
fetching.upon(BlobFetch.race_failed).to(done)(no_mirror_left)


@fetching.upon(BlobFetch.race_timed_out).to(fetching, when=mirrors_left)
def race_timed_out(inputs: BlobFetch, op: Op, timed_out: TimedOut) -> None:
    log.info("request given up", blob=op.core.index, mirror=timed_out.peer, rule=timed_out.rule,
             waited=round(timed_out.waited, 3), limit=round(timed_out.limit, 3))  # fmt: skip
    race(inputs, op)


fetching.upon(BlobFetch.race_timed_out).to(done)(no_mirror_left)
(idle | fetching).upon(BlobFetch.cancel).to(done).returns(None)

blob_fetch_machine = builder.build()
