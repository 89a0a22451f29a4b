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


def test_demo_logs_the_cancel_flowing_into_cleanup() -> None:
    done = run_example("examples.demo")
    assert done.returncode == 0, done.stderr
    # The event name is the first word after the "[level]" column.
    events = [
        line.split("]", 1)[1].split()[0]
        for line in done.stderr.splitlines()
        if " op=2 " in f"{line} " and "]" in line
    ]
    # cancel is recognised, the machine moves, the connection is released,
    # and only then does the completion fire.
    assert events[events.index("cancel") :] == ["cancel", "transition", "release", "completed"]
