"""
Suite-wide discipline: no test may leave an unhandled error in a Deferred,
and each test starts with structlog unconfigured, as a library finds it.

Twisted reports a Deferred that was garbage-collected while holding a
failure as "Unhandled error in Deferred".  fsmcancel promises that its own
machinery never produces one (cancelled calls, forced releases and
abandoned children are all consumed), so every test collects garbage when it
ends and fails if one was logged while it ran.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any, cast

import pytest
import structlog
from twisted.logger import ILogObserver, globalLogPublisher


@pytest.fixture(autouse=True)
def no_unhandled_deferred_errors() -> Iterator[None]:
    gc.collect()
    unhandled: list[dict[str, Any]] = []

    def record(event: dict[str, Any]) -> None:
        if "Unhandled error in Deferred" in str(event.get("log_format", "")):
            unhandled.append(event)

    observe = cast(ILogObserver, record)

    globalLogPublisher.addObserver(observe)
    try:
        yield
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not unhandled, "unhandled errors in Deferreds: " + "; ".join(
        str(e.get("log_failure")) for e in unhandled
    )


@pytest.fixture(autouse=True)
def unconfigured_structlog() -> Iterator[None]:
    """
    ``capture_logs`` and the logging tests configure structlog; put it back
    the way an application that never configured it has it.
    """
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
