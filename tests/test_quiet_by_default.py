"""
A library is quiet unless the application asks it to speak (issue 12).

Each case runs in a fresh interpreter, because "structlog has not been
configured" is process state that the rest of the suite changes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
from twisted.internet.task import Clock
from tests.test_core import Core, download_factory

op = download_factory()(Core(**CORE), clock=Clock())
op.completion.addErrback(lambda f: None)
op.inputs.start()
"""


def run(core: str, then: str, configure: str = "") -> subprocess.CompletedProcess[str]:
    code = configure + PRELUDE.replace("CORE", core) + textwrap.dedent(then)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )


@pytest.mark.parametrize(
    "then",
    [
        'op.core.calls[0].callback("last")',  # success: several transitions
        'op.cancel("user")',  # a cancel: info events
        'op.core.calls[0].errback(OSError("boom"))',  # a failure: info events
    ],
)
def test_unconfigured_structlog_prints_nothing_below_warning(then: str) -> None:
    done = run("{}", then)
    assert done.stdout == "" and done.stderr == ""


def test_warnings_and_errors_still_reach_stderr() -> None:
    done = run('{"fail_release": {"buffer"}}', 'op.cancel("user")')
    assert done.stdout == ""
    assert "cleanup error" in done.stderr and "buffer" in done.stderr
    assert "transition" not in done.stderr and "cancel " not in done.stderr


def test_a_configured_application_gets_everything_it_asks_for() -> None:
    configure = (
        "import logging, structlog\n"
        "structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))\n"
    )
    done = run("{}", 'op.core.calls[0].callback("last")', configure)
    assert done.stdout.count("transition") == 4 and "completed" in done.stdout
