"""
Download blobs from several HTTP mirrors that can stall silently (the
Tahoe-LAFS case, over HTTP).

    python -m examples.mirror_fetch --mirror http://127.0.0.1:8001 \\
        --mirror http://127.0.0.1:8002 --count 100 --out blobs/ --json [--inspect 8080]

The run is one ``mirror-fetch`` operation whose ``fetching`` state owns a
child group of ``blob-fetch`` operations (`examples.mirror_blob`), at most
``--concurrency`` at a time; each child's outcome comes back as an input
naming the blob, and a guarded transition ends the run when the group is
settled.  Each blob races the mirrors with the timeouts' hedging, healthiest
first (``Timeouts.rank``: suspect mirrors last), so a mirror that goes silent
has the blob asked of another within the learned hedge delay.

Timeouts come from a TOML file (``--timeouts``, default
``examples/mirror_timeouts.toml``).  Ctrl-C or SIGTERM stops the
``OperationService`` tracking the run, which cancels it: releasing the group
cancels every blob in flight, whose releases delete their temporary files
and abort their connections, and the run completes once those sockets are
closed.  One summary line is printed and the exit status is 130 (SIGINT) or
143 (SIGTERM); a second signal stops waiting for cleanup and forces what is
left.  Exit status 0 when every blob is written, 1 (naming each blob that
could not be fetched and each mirror's error) otherwise.  ``--inspect
PORT`` serves the live inspector page on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TextIO, cast
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from examples._progress import ProgressLine
from examples.mirror_blob import (
    DEFAULT_TIMEOUTS,
    KIND,
    Blob,
    BlobUnavailable,
    Mirrors,
    blob_fetch_machine,
    describe_failure,
)
from fsmcancel import Cancellable, Operation, OperationBuilder, OperationService, Registry
from fsmcancel.core import ChildGroup
from fsmcancel.timeouts import TimeoutConfig, Timeouts

__all__ = ["blob_fetch_machine", "main", "mirror_fetch_machine", "parse_args"]

#: Exit status per signal: 128 + its number, as a shell reports it.
EXIT_ON = {signal.SIGINT: 130, signal.SIGTERM: 143}


class MirrorFetch(Cancellable, Protocol):
    """The inputs of a run."""

    def start(self) -> None: ...
    def fetched(self, index: int, outcome: str) -> None: ...
    def failed(self, index: int, outcome: Failure) -> None: ...


@dataclass
class Run:
    """The core of a run: what it fetches, with what, and how it went."""

    mirrors: Mirrors
    count: int
    concurrency: int
    registry: Registry | None = None
    progress: ProgressLine | None = None
    fetched: int = 0
    failures: list[str] = field(default_factory=list)
    group: ChildGroup[int, str] | None = None

    def start_blob(self, op: RunOp, index: int) -> Operation[Any, Any, str]:
        blob = blob_fetch_machine(Blob(index, self.mirrors), clock=op.clock, registry=self.registry)
        blob.inputs.start()
        return blob

    def draw(self) -> None:
        if self.progress is None or self.group is None:
            return
        done = self.fetched + len(self.failures)
        filled = 30 * done // self.count
        stats = self.mirrors.stats.values()
        self.progress.show(
            f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.count} blobs, "
            f"{len(self.group.live)} in flight, {len(self.mirrors.resends)} stalls, "
            f"{sum(s.errors for s in stats)} errors"
        )


RunOp = Operation[MirrorFetch, Run]

builder = OperationBuilder(MirrorFetch, Run, name="mirror-fetch")
idle = builder.state("idle")
fetching = builder.state("fetching", resources=["blobs"], children=[blob_fetch_machine])
done = builder.terminal_state("done")


@idle.upon(MirrorFetch.start).to(fetching)
def start(inputs: MirrorFetch, op: RunOp) -> None:
    run = op.core
    run.group = op.children(
        ((i, partial(run.start_blob, op, i)) for i in range(run.count)),
        on_result=inputs.fetched,
        on_failure=inputs.failed,
        limit=run.concurrency,
        name="blobs",
    )


def settled(inputs: MirrorFetch, op: RunOp, *_: object, **__: object) -> bool:
    return op.core.group is not None and op.core.group.settled


def count(inputs: MirrorFetch, op: RunOp, index: int, outcome: str | Failure) -> None:
    run = op.core
    if not isinstance(outcome, Failure):
        run.fetched += 1
    elif isinstance(outcome.value, BlobUnavailable):
        run.failures.append(str(outcome.value))
    else:
        run.failures.append(f"blob {index}: {describe_failure(outcome)}")
    run.draw()


def finish(inputs: MirrorFetch, op: RunOp, index: int, outcome: str | Failure) -> None:
    count(inputs, op, index, outcome)
    op.succeed(None)


fetching.upon(MirrorFetch.fetched).to(done, when=settled)(finish)
fetching.upon(MirrorFetch.fetched).loop()(count)
fetching.upon(MirrorFetch.failed).to(done, when=settled)(finish)
fetching.upon(MirrorFetch.failed).loop()(count)
(idle | fetching).upon(MirrorFetch.cancel).to(done).returns(None)

mirror_fetch_machine = builder.build()


# -- the report ------------------------------------------------------------------


def report(run: Run, seconds: float) -> dict[str, object]:
    """What ``--json`` prints."""
    mirrors = run.mirrors
    timeouts = mirrors.timeouts
    per_mirror: dict[str, dict[str, object]] = {}
    for url, stats in mirrors.stats.items():
        explained = timeouts.explain(KIND, url)
        limits = {"first_sign": explained.first_sign, "silence": explained.silence}
        if explained.hedge is not None:
            limits["hedge"] = explained.hedge
        per_mirror[url] = {
            **asdict(stats),
            "health": timeouts.health(url).state,
            "limits": {k: {"seconds": round(v.seconds, 3), "source": v.source}
                       for k, v in limits.items()},
        }  # fmt: skip
    resends = [
        {"blob": r.blob, "from": r.source, "to": r.target, "after": round(r.silent_for, 3),
         "how": r.how}
        for r in mirrors.resends
    ]  # fmt: skip
    return {
        "fetched": run.fetched,
        "failed": len(run.failures),
        "seconds": round(seconds, 3),
        "mirrors": per_mirror,
        "max_stall_detection_seconds": round(
            max((r.silent_for for r in mirrors.resends), default=0.0), 3
        ),
        "resends": resends,
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
    from examples._servers import timeouts_option  # it imports the reactor

    config = timeouts_option(p, args.timeouts or DEFAULT_TIMEOUTS)
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

    from twisted.internet import reactor as global_reactor

    from examples._servers import setup_logging

    # On a terminal, the progress bar; log lines go above it.
    progress = ProgressLine(sys.stderr) if sys.stderr.isatty() else None
    setup_logging(getattr(logging, settings.log_level.upper()), cast(TextIO, progress))
    reactor: Any = global_reactor  # Twisted's zope interfaces confuse mypy without a plugin
    mirrors = Mirrors(settings.mirrors, settings.out, Timeouts(settings.config), reactor)
    registry = Registry(history=20)
    run = Run(mirrors, settings.count, settings.concurrency, registry, progress)
    op = mirror_fetch_machine(run, clock=reactor, registry=run.registry)
    operations = OperationService(clock=reactor)
    operations.startService()
    operations.track(op)
    if settings.inspect is not None:
        from fsmcancel.inspector import listen_inspector

        inspector = listen_inspector(registry, settings.inspect, reactor=reactor)
        address: Any = inspector.getHost()
        print(f"inspector on http://{address.host}:{address.port}/", file=sys.stderr, flush=True)
    # Whatever stops the reactor, nothing is left running: the run is
    # cancelled, and waited for, before it shuts down.
    reactor.addSystemEventTrigger("before", "shutdown", operations.stopService)
    signals: list[signal.Signals] = []
    stopping: list[Deferred[None]] = []

    def interrupt(signum: int) -> None:
        """The first signal cancels the run; a second forces its cleanup."""
        if op.done:
            return
        signals.append(signal.Signals(signum))
        if stopping:
            stopping[0].cancel()
        else:
            stopping.append(operations.stopService())

    def on_signal(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(interrupt, signum)

    for signum in EXIT_ON:
        signal.signal(signum, on_signal)
    outcome: list[object] = []
    started = reactor.seconds()
    op.completion.addBoth(outcome.append).addBoth(lambda _: reactor.stop())
    reactor.callWhenRunning(op.inputs.start)
    reactor.run(installSignalHandlers=False)
    elapsed = reactor.seconds() - started
    if progress is not None:
        progress.clear()

    group = run.group
    started_blobs = group.started if group is not None else 0
    if signals:
        code = EXIT_ON[signals[0]]
        cancelled = started_blobs - run.fetched - len(run.failures)
        left = len(list(settings.out.glob(".*.part")))
        files = "no partial files left" if not left else f"{left} temporary files left behind!"
        print(
            f"interrupted: {run.fetched} of {run.count} blobs written, {cancelled} in flight "
            f"cancelled, {run.count - started_blobs} not started; {files}",
            file=sys.stderr,
        )
    else:
        code = 1 if run.failures or not outcome or isinstance(outcome[0], Failure) else 0
        if outcome and isinstance(outcome[0], Failure) and not run.failures:
            print(f"error: {describe_failure(outcome[0])}", file=sys.stderr)
        for failure in run.failures:
            print(f"error: {failure}", file=sys.stderr)
        if progress is not None:
            print(
                f"{run.fetched} of {run.count} blobs written to {settings.out} in {elapsed:.1f}s",
                file=sys.stderr,
            )
    if settings.json:
        print(json.dumps(report(run, elapsed)))
    return code


if __name__ == "__main__":
    sys.exit(main())
