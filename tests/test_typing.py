"""
The outcome type is part of an operation's type (issue 12).

``tests/typing/outcomes.py`` states what a type checker must accept and
reject.  mypy checks it in CI (``.ci/run`` runs mypy over ``tests/``, with
``warn_unused_ignores``); this test runs pyright over it, when pyright is
installed (``pip install pyright``; it fetches its own Node.js runtime), and
imports it, so the module also runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_typed_example_runs() -> None:
    from tests.typing import outcomes

    assert outcomes.op.machine == "typed"
    assert outcomes.fetch.outcome is bytes


def test_pyright_agrees(tmp_path: Path) -> None:
    pyright = shutil.which("pyright") or str(Path(sys.executable).parent / "pyright")
    if not Path(pyright).exists():
        pytest.skip("pyright is not installed (pip install pyright)")
    config = tmp_path / "pyrightconfig.json"
    config.write_text(
        json.dumps(
            {
                "typeCheckingMode": "standard",
                "reportUnnecessaryTypeIgnoreComment": "error",
                "extraPaths": [str(ROOT)],
            }
        )
    )
    try:
        done = subprocess.run(
            [pyright, "-p", str(config), "--pythonpath", sys.executable,
             str(ROOT / "tests" / "typing" / "outcomes.py")],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("pyright did not start within 5 minutes (no Node.js download?)")
    if "0 errors" not in done.stdout and "error" not in done.stdout:
        pytest.skip(f"pyright could not run: {done.stdout[-300:]} {done.stderr[-300:]}")
    assert done.returncode == 0, done.stdout
