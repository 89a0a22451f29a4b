"""
The ``fsmcancel`` command behaves like a well-mannered Unix tool.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fsmcancel.timeouts import Timeouts


def test_a_closed_pipe_is_not_an_error() -> None:
    # `fsmcancel timeouts show | head -0`: the reader is gone before the
    # first write, so the write certainly fails with EPIPE.
    read, write = os.pipe()
    os.close(read)
    try:
        show = subprocess.run(
            [sys.executable, "-m", "fsmcancel.cli", "timeouts", "show"],
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write)
    assert show.returncode == 0 and b"Traceback" not in show.stderr, show.stderr


def test_timeouts_without_a_config_honour_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__INITIAL", "1500ms")
    assert Timeouts().config.rule().idle.initial == 1.5
