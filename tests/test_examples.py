"""
The examples run as real programs, against real sockets on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_readme_example_fetches_then_cancels_into_cleanup() -> None:
    done = run_example("examples.fetch_line")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "1. fetched: 'Once upon a midnight dreary'"
    assert lines[1] == "2. cancelling while in state 'reading', holding ['connection']"
    assert "OperationCancelled" in lines[2] and "the user changed their mind" in lines[2]
    assert "cancelled in state 'reading'" in lines[2]
    assert lines[3] == "   the server saw the client hang up; open connections: 0"


def test_demo_shows_cancel_failover_and_diagrams() -> None:
    done = run_example("examples.demo", timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # 1. the cancel flows into the request's machine, then into the shared
    #    download's, and the slow server sees the upstream close.
    proxy = [line for line in out.splitlines() if line.startswith("  [proxy]")]
    events = [
        line.split("]", 2)[2].split()[0] for line in proxy if "[debug" in line or "[info" in line
    ]
    first_cancel = events.index("cancel")
    assert "release" in events[first_cancel:]
    assert "the slow server saw the upstream close" in out
    assert "disconnected after" in out
    # 2. a stall detected, the blob fetched elsewhere, every blob intact.
    assert "stall detected" in out and "blob fetched after failover" in out
    assert "24/24 blobs intact" in out
    # 3. diagrams written where it says.
    where = out.split("diagrams are in ", 1)[1].split()[0]
    assert sorted(p.name for p in Path(where).iterdir()) >= ["blob-fetch.dot", "blob-fetch.mmd"]
