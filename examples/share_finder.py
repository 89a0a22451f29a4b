"""
Download a file stored as K shares on storage servers, some of which may
stall silently (Brian Warner's downloader, seed 001)::

    python -m examples.share_finder --server HOST:PORT [--server HOST:PORT ...] \\
        --si SI -k K --out FILE [--sha256 HEX] [--concurrency C] [--timeouts FILE] [--json]

The file is shares 0..K-1 of storage index SI, concatenated.  Every server
is asked which shares it holds (``QUERY``), each share is downloaded
(``GET``) from a holder as soon as one is known, a download that stalls,
breaks, is refused or comes back short, long or garbled is sent to another
holder, and the run ends as soon as all K shares are in, every outstanding
connection closed.  At most C connections (default 10) are open at once,
queries and downloads together.  The wire protocol is in
`examples.share_protocol`, the machines in `examples.share_machines`.

Outcomes:

- exit 0: FILE written atomically (never a partial FILE, never a temporary
  file beside it: see `write_atomically`);
- exit 1, no FILE: ``--sha256`` given and the file does not match;
- exit 1: some shares cannot be had; each is named with what its holders
  did, then each server's errors;
- exit 130 on SIGINT, 143 on SIGTERM: every request cancelled, every
  connection closed, no FILE; a second signal stops waiting for cleanup;
- exit 2: a bad command line, naming the bad value.

``--json`` prints one object on stdout: the server used for each share,
per-server queries, downloads, stalls and errors, and
``max_stall_detection_seconds``: the longest silence after which a share
download was given up as stalled and sent to another holder.  Timeouts come
from ``--timeouts FILE`` (default: ``share_timeouts.toml`` beside this
program; the file replaces it, layered over fsmcancel's built-in defaults).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from examples.share_machines import TIMEOUTS, Search, share_finder
from examples.share_protocol import SI_PATTERN, Connections, split_address
from examples.share_report import Found, SharesUnavailable, summary
from fsmcancel import OperationCancelled, OperationService
from fsmcancel.timeouts import TimeoutConfig, Timeouts

EXIT_FAILED = 1


# -- writing the file ---------------------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    """
    Write ``data`` to ``path``: a reader sees no file, or the whole file.

    On Linux the data goes to an unnamed file in ``path``'s directory
    (``O_TMPFILE``), is synced, then linked to its name, so no temporary
    name ever appears beside it, even if the process is killed.  Replacing
    an existing file links under a hidden name first, then renames over it.
    Where ``O_TMPFILE`` is missing (other systems, some filesystems) a
    hidden temporary file is written, synced and renamed instead; it exists
    only while this function runs.
    """
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o666, dir_fd=directory)
        except (AttributeError, OSError):
            _write_by_rename(path, data, directory)
            return
        try:
            _write_all(fd, data)
            # linkat(AT_SYMLINK_FOLLOW) of the magic link names the open file;
            # os.link only uses linkat when given a directory descriptor.
            linked = f"/proc/self/fd/{fd}"
            try:
                os.link(linked, path.name, src_dir_fd=directory, dst_dir_fd=directory)
            except FileExistsError:
                hidden = f".{path.name}.{os.getpid()}.new"
                os.link(linked, hidden, src_dir_fd=directory, dst_dir_fd=directory)
                os.replace(hidden, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        finally:
            os.close(fd)
        os.fsync(directory)
    finally:
        os.close(directory)


def _write_by_rename(path: Path, data: bytes, directory: int) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        _write_all(fd, data)
        os.replace(name, path)
    except BaseException:
        os.unlink(name)
        raise
    finally:
        os.close(fd)
    os.fsync(directory)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


# -- the run ----------------------------------------------------------------------


@dataclass
class Settings:
    servers: list[str]
    si: str
    k: int
    out: Path
    sha256: str | None
    concurrency: int
    config: TimeoutConfig
    json: bool
    log_level: str = "warning"


class Run:
    """
    One run of the finder on a reactor: the operation, the service that
    cancels it on a signal, and what the run ends with (``exit_status``,
    the `summary`).
    """

    def __init__(self, reactor: Any, settings: Settings) -> None:
        self.reactor = reactor
        self.settings = settings
        self.connections = Connections(reactor, settings.si, settings.k)
        self.search = Search(
            settings.si, settings.k, settings.servers, settings.concurrency,
            Timeouts(settings.config), self.connections,
        )  # fmt: skip
        self.op = share_finder(self.search, clock=reactor)
        self.operations = OperationService(clock=reactor)
        self.operations.startService()
        self.stopping: Deferred[None] | None = None
        self.signalled: int | None = None
        self.exit_status = EXIT_FAILED
        self.found: Found | None = None
        self.missing: list[int] = []
        self.started = time.monotonic()
        self.finished: Deferred[int] = Deferred()

    def start(self) -> None:
        self.op.completion.addBoth(self._completed)
        self.operations.track(self.op).inputs.start()

    def interrupt(self, signum: int) -> None:
        """A signal: cancel the run (a second one forces its cleanup)."""
        if self.op.done:
            return  # finished already: it ends as it was going to
        if self.stopping is not None:
            self.stopping.cancel()
            return
        self.signalled = signum
        self.stopping = self.operations.stopService()

    def _completed(self, result: Found | Failure) -> None:
        s = self.settings
        if isinstance(result, Found):
            digest = hashlib.sha256(result.data).hexdigest()
            if s.sha256 is not None and digest != s.sha256:
                say(f"error: sha256 mismatch: expected {s.sha256}, got {digest}")
                say(f"{s.out} not written")
            else:
                try:
                    write_atomically(s.out, result.data)
                except OSError as e:
                    say(f"error: cannot write {s.out}: {e.strerror or e}")
                else:
                    self.found, self.exit_status = result, 0
                    seconds = time.monotonic() - self.started
                    say(f"wrote {s.out}: {len(result.data)} bytes, {s.k} shares in {seconds:.2f}s")
        elif result.check(OperationCancelled) and self.signalled is not None:
            self.exit_status = 128 + self.signalled
            say(f"interrupted by {signal.Signals(self.signalled).name}: {s.out} not written")
        else:
            if isinstance(result.value, SharesUnavailable):
                self.missing = sorted(result.value.missing)
            say(f"error: {result.getErrorMessage()}")
            for server, stats in self.search.stats.items():
                for problem in stats.problems:
                    say(f"  {server}: {problem}")
        self.finished.callback(self.exit_status)

    def report(self) -> dict[str, object]:
        sources = self.found.sources if self.found is not None else {}
        s = self.search
        return summary(s.servers, s.stats, sources, self.missing, self.connections.most)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- command line -----------------------------------------------------------------


def server_address(text: str) -> str:
    try:
        split_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def storage_index(text: str) -> str:
    if not SI_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"bad storage index {text!r}: expected 1 to 64 characters of a-z and 0-9"
        )
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def sha256_hex(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError(f"bad sha256 {text!r}: expected 64 hexadecimal digits")
    return text.lower()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m examples.share_finder",
        description="Download shares 0..K-1 of a storage index from storage servers, "
        "failing over when a server stalls, and write them, concatenated, to FILE.",
    )
    p.add_argument(
        "--server", type=server_address, action="append", default=[], metavar="HOST:PORT",
        help="a storage server; repeat for more",
    )  # fmt: skip
    p.add_argument("--si", type=storage_index, required=True, help="the storage index")
    p.add_argument("-k", type=positive_int, required=True, metavar="K", help="number of shares")
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--sha256", type=sha256_hex, metavar="HEX", help="the file's expected sha256")
    p.add_argument(
        "--concurrency", type=positive_int, default=10, metavar="C",
        help="connections open at once, queries and downloads together (default 10)",
    )  # fmt: skip
    p.add_argument(
        "--timeouts", type=Path, metavar="FILE",
        help=f"timeouts TOML file (default: {TIMEOUTS.name} beside this program)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="warning",
        help="fsmcancel's structlog events on stderr (default: warning)",
    )  # fmt: skip
    return p


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    p = parser()
    args = p.parse_args(argv)
    if not args.server:
        p.error("at least one --server HOST:PORT is required")
    if len(set(args.server)) != len(args.server):
        p.error("the same --server is given twice")
    from examples._servers import timeouts_option  # it imports the reactor

    config = timeouts_option(p, args.timeouts or TIMEOUTS)
    out: Path = args.out
    if out.is_dir():
        p.error(f"--out {out}: is a directory")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK | os.X_OK):
        p.error(f"--out {out}: cannot write in {out.parent}")
    return Settings(
        args.server, args.si, args.k, out, args.sha256, args.concurrency, config, args.json,
        args.log_level,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    from twisted.internet import reactor as global_reactor

    from examples._servers import setup_logging

    setup_logging(getattr(logging, settings.log_level.upper()))
    reactor: Any = global_reactor  # Twisted's zope interfaces confuse mypy without a plugin
    run = Run(reactor, settings)
    # Whatever stops the reactor, the operation is cancelled and its
    # cleanup (every connection closed) waited for before it shuts down.
    reactor.addSystemEventTrigger("before", "shutdown", run.operations.stopService)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(run.interrupt, signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    run.finished.addCallback(lambda _: reactor.stop())
    reactor.callWhenRunning(run.start)
    reactor.run(installSignalHandlers=False)
    if settings.json:
        print(json.dumps(run.report()))
    return run.exit_status


if __name__ == "__main__":
    sys.exit(main())
