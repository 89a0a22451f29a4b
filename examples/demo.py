"""
The demo: ``python -m examples.demo``.

Runs the examples as the README shows them, on 127.0.0.1, and relays what
each program prints (its structlog events included) with the program's name
in front:

1. the Poetry Proxy with a client that hangs up half-way: the cancel flows
   into the request's machine, the shared download's last subscriber leaves,
   and the slow poetry server sees the upstream connection close;
2. a mirror fetch from three mirrors, one of which goes silent mid-body: a
   hedged request asks another mirror once the silence is longer than the
   learned hedge delay (a few hundred milliseconds), the silent request is
   given up only later, at its own limit, and every blob arrives intact;
3. the share finder (Warner's downloader) on a small cluster in which one
   server never answers and one stalls mid-body on every download: each
   stalled share is fetched from another server, the file's sha256 matches,
   and its JSON summary says who served what and how fast stalls were seen;
4. the diagrams of the machines involved, written to a directory it names.

Exits 0 when all of that happened, within about 30 seconds.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsmcancel.diagram import DiagramFormat

ROOT = Path(__file__).resolve().parent.parent
POEM = ROOT / "examples" / "poems" / "raven.txt"
_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


class Program:
    """
    A running example program whose output is relayed, line by line, and
    can be waited on.
    """

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            say(f"  [{self.name}] {line}")
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if text in line:
                    self.seen.remove(line)
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SystemExit(f"demo: {self.name} did not print {text!r} in {timeout:.0f}s")
            try:
                self.seen.append(self.lines.get(timeout=remaining))
            except queue.Empty:
                continue

    def port(self) -> int:
        return int(self.wait_for("listening on ").rsplit(":", 1)[1])

    def exit_status(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)


@contextmanager
def running(name: str, *args: str) -> Iterator[Program]:
    program = Program(name, *args)
    try:
        yield program
    finally:
        program.stop()


def heading(text: str) -> None:
    say(f"\n=== {text}")


def proxy_with_a_client_that_hangs_up() -> None:
    heading("1. Poetry Proxy 3.0: a client hangs up before the poem arrives")
    with running(
        "slow-server",
        "examples.slow_poetry_server",
        "--port=0",
        "--delay=0.25",
        "--chunk=60",
        str(POEM),
    ) as server:
        upstream = server.port()
        with running(
            "proxy",
            "examples.poetry_proxy",
            "--port=0",
            f"--upstream=127.0.0.1:{upstream}",
            "--log-level=debug",
        ) as proxy:
            client = socket.create_connection(("127.0.0.1", proxy.port()), timeout=10)
            server.wait_for("sent ")
            server.wait_for("sent ")
            say("  [demo] the client hangs up now")
            hung_up = time.monotonic()
            client.close()
            server.wait_for("disconnected after")
            elapsed = (time.monotonic() - hung_up) * 1000
            proxy.wait_for("completed")
            say(f"  [demo] the slow server saw the upstream close {elapsed:.0f} ms after hang-up")


def mirror_fetch_with_a_silent_mirror(out: Path) -> None:
    heading("2. Mirror fetch: one of three mirrors goes silent mid-body")
    from examples.mirror_server import blob_bytes

    count = 24
    common = ["--port=0", "--latency-ms=80", "--chunks=4", "--blob-size=4096"]
    with (
        running("mirror-a", "examples.mirror_server", *common) as a,
        running("mirror-b", "examples.mirror_server", *common) as b,
        running(
            "mirror-c (goes silent)",
            "examples.mirror_server",
            *common,
            "--stall-after=4",
            "--stall-mode=mid-body",
        ) as c,
    ):
        urls = [f"http://127.0.0.1:{m.port()}" for m in (a, b, c)]
        started = time.monotonic()
        with running(
            "mirror-fetch",
            "examples.mirror_fetch",
            *(f"--mirror={url}" for url in urls),
            f"--count={count}",
            f"--out={out}",
            "--concurrency=3",
            "--json",
            "--log-level=info",
        ) as fetch:
            status = fetch.exit_status(timeout=60)
            report_line = fetch.wait_for('{"fetched"')
        if status != 0:
            raise SystemExit(f"demo: mirror_fetch exited {status}")
        report = json.loads(report_line)
        intact = sum((out / str(i)).read_bytes() == blob_bytes(i, 4096) for i in range(count))
        resends = report["resends"]
        say(
            f"  [demo] {intact}/{count} blobs intact in {time.monotonic() - started:.1f}s; "
            f"{len(resends)} silent request(s) re-sent to another mirror, the slowest after "
            f"{report['max_stall_detection_seconds']:.2f}s of silence"
        )
        if intact != count or not resends:
            raise SystemExit("demo: the mirror fetch did not show a stall and a full recovery")


def share_finder_with_a_silent_and_a_stalling_server(out: Path) -> None:
    heading("3. Share finder: one server never answers, one stalls mid-body on every GET")
    k, si = 8, "demo"
    servers = ["healthy:0-4", "healthy:3-7@0.05", "silent", "stall"]
    with running(
        "cluster",
        "examples.share_cluster",
        f"--si={si}",
        f"-k={k}",
        "--quiet",
        *(f"--server={spec}" for spec in servers),
    ) as cluster:
        addresses = [cluster.wait_for("listening on").split()[3] for _ in servers]
        digest = cluster.wait_for("file sha256").split()[2]
        started = time.monotonic()
        with running(
            "share-finder",
            "examples.share_finder",
            *(f"--server={address}" for address in addresses),
            f"--si={si}",
            f"-k={k}",
            f"--out={out}",
            f"--sha256={digest}",
            "--json",
        ) as finder:
            status = finder.exit_status(timeout=60)
            report = json.loads(finder.wait_for('{"shares"'))
    if status != 0:
        raise SystemExit(f"demo: share_finder exited {status}")
    names = dict(zip(addresses, servers, strict=True))
    served = sorted({names[server] for server in report["shares"].values()})
    stalls = sum(s["stalls"] for s in report["servers"].values())
    say(
        f"  [demo] {k}/{k} shares in {time.monotonic() - started:.1f}s from {', '.join(served)}; "
        f"sha256 matches; {stalls} stall(s), each detected after at most "
        f"{report['max_stall_detection_seconds']:.2f}s of silence and re-requested elsewhere"
    )
    if stalls == 0 or "stall" in served or "silent" in served:
        raise SystemExit("demo: the share finder did not show a stall and a failover")


def diagrams(out: Path) -> None:
    heading("4. Diagrams of the machines involved, generated from the code")
    from examples import mirror_fetch, poetry_proxy, share_machines
    from fsmcancel.diagram import (
        GraphvizNotFound,
        diagram_files,
        find_dot,
        spec_of,
        write_diagrams,
    )

    formats: tuple[DiagramFormat, ...] = ("dot", "mermaid", "svg")
    try:
        find_dot()
    except GraphvizNotFound as e:
        say(f"  [demo] no SVG: {e}")
        formats = ("dot", "mermaid")
    machines = [poetry_proxy.proxy_request, poetry_proxy.poem_download]
    machines += [mirror_fetch.mirror_fetch_machine, mirror_fetch.blob_fetch_machine]
    machines += [share_machines.share_finder, share_machines.share_request]
    files = diagram_files([spec_of(m) for m in machines], out, formats)
    for path in write_diagrams(files):
        say(f"  [demo] wrote {path}")
    say(f"  [demo] diagrams are in {out}")


def main() -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fsmcancel-demo-"))
    proxy_with_a_client_that_hangs_up()
    mirror_fetch_with_a_silent_mirror(work / "blobs")
    share_finder_with_a_silent_and_a_stalling_server(work / "file")
    diagrams(work / "diagrams")
    say(f"\ndemo finished in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
