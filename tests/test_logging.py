"""
The logging recipes in the README work: events reach ``twisted.logger`` with
the right level and fields, and JSON output carries every field.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any, cast

import pytest
import structlog
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher

from fsmcancel import TwistedLoggerFactory
from tests.test_core import Core, download_factory


@pytest.fixture
def twisted_events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    observer = cast(ILogObserver, seen.append)
    globalLogPublisher.addObserver(observer)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(observer)
        structlog.reset_defaults()


def cancelled_operation(**core: Any) -> None:
    op = download_factory()(Core(**core), clock=Clock())
    op.inputs.start()
    op.completion.addErrback(lambda f: None)
    op.cancel("shutting down")


def test_structured_events_reach_twisted_logger(twisted_events: list[dict[str, Any]]) -> None:
    structlog.configure(
        processors=[structlog.processors.add_log_level],
        logger_factory=TwistedLoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    cancelled_operation(fail_release={"buffer"})
    ours = [e for e in twisted_events if e.get("log_namespace") == "fsmcancel"]
    by_name = {e["event"]: e for e in ours}
    cancel = by_name["cancel"]
    assert cancel["log_level"] == LogLevel.info
    assert cancel["reason"] == "shutting down" and cancel["state"] == "receiving"
    assert formatEvent(cancel) == "cancel"
    assert by_name["transition"]["log_level"] == LogLevel.debug
    error = by_name["cleanup error"]
    assert error["log_level"] == LogLevel.error and error["resource"] == "buffer"
    assert error["log_failure"].check(RuntimeError)


def test_filtered_out_levels_do_not_reach_twisted(twisted_events: list[dict[str, Any]]) -> None:
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer()],
        logger_factory=TwistedLoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    cancelled_operation()
    messages = [formatEvent(e) for e in twisted_events if e.get("log_namespace") == "fsmcancel"]
    assert messages and all("transition" not in m for m in messages)
    assert any("event='cancel'" in m and "reason='shutting down'" in m for m in messages)


def test_json_lines() -> None:
    out = io.StringIO()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(out),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    try:
        cancelled_operation()
    finally:
        structlog.reset_defaults()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    transition = next(e for e in events if e["event"] == "transition")
    assert set(transition) >= {"op", "machine", "old", "input", "new", "seconds", "level"}
    assert [e["event"] for e in events][-1] == "completed"
