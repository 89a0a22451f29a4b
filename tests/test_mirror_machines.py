"""
The mirror fetch's machines (``mirror-fetch`` and its ``blob-fetch``
children) cancelled in every state they can be in, under ``task.Clock``, on
a memory reactor whose connections never complete: the completion fires
once, nothing is held or armed afterwards, every connection attempt was
stopped, no temporary file is left, and every resource is declared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from examples.mirror_blob import DEFAULT_TIMEOUTS, Blob, Mirrors, blob_fetch_machine
from examples.mirror_fetch import Run, mirror_fetch_machine
from fsmcancel import OperationCancelled
from fsmcancel.testing import CancelCase, cancel_cases
from fsmcancel.timeouts import Timeouts, load_config

CASES = cancel_cases(blob_fetch_machine) + cancel_cases(mirror_fetch_machine)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_cancel_in_each_state_releases_everything(case: CancelCase, tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://[::1]:3"]
    mirrors = Mirrors(urls, tmp_path, Timeouts(load_config(DEFAULT_TIMEOUTS, env={})), reactor)

    def core() -> object:
        if case.factory is blob_fetch_machine:
            return Blob(0, mirrors)
        return Run(mirrors, count=5, concurrency=2)

    outcome = case.check(core)
    assert isinstance(outcome, Failure) and outcome.check(OperationCancelled)
    attempts = {"idle": 0, "fetching": 1 if case.factory is blob_fetch_machine else 2}
    assert len(reactor.connectors) == attempts[case.state]
    assert all(c.stoppedConnecting for c in reactor.connectors)
    assert list(tmp_path.iterdir()) == []
