"""
``TwistedLoggerFactory``: each logger emits in its own ``twisted.logger``
namespace, and every form of structlog's ``exc_info`` reaches Twisted's
observers as a ``log_failure`` with its traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from twisted.internet.task import Clock
from twisted.logger import eventAsText

from fsmcancel import TwistedLoggerFactory
from tests.test_core import Core, download_factory
from tests.test_logging import twisted_events

__all__ = ["twisted_events"]  # the fixture, shared with test_logging.py


def configure(factory: TwistedLoggerFactory, wrapper: Any = None) -> None:
    structlog.configure(
        processors=[structlog.processors.add_log_level],
        logger_factory=factory,
        wrapper_class=wrapper or structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )


def named(events: list[dict[str, Any]], event: str) -> dict[str, Any]:
    [found] = [e for e in events if e.get("event") == event]
    return found


# -- namespaces ---------------------------------------------------------------


def test_each_logger_emits_in_the_namespace_of_its_name(
    twisted_events: list[dict[str, Any]],
) -> None:
    configure(TwistedLoggerFactory())
    structlog.get_logger("myapp").info("app event", answer=42)
    structlog.get_logger("myapp.db").warning("db event")
    op = download_factory()(Core(), clock=Clock())
    op.inputs.start()
    op.completion.addErrback(lambda f: None)
    op.cancel("shutting down")

    assert named(twisted_events, "app event")["log_namespace"] == "myapp"
    assert named(twisted_events, "app event")["answer"] == 42
    assert named(twisted_events, "db event")["log_namespace"] == "myapp.db"
    assert named(twisted_events, "cancel")["log_namespace"] == "fsmcancel"


def test_an_unnamed_logger_emits_in_the_logging_module(
    twisted_events: list[dict[str, Any]],
) -> None:
    configure(TwistedLoggerFactory())
    structlog.get_logger().info("unnamed")
    assert named(twisted_events, "unnamed")["log_namespace"] == __name__


def test_an_unnamed_logger_uses_the_given_namespace(twisted_events: list[dict[str, Any]]) -> None:
    configure(TwistedLoggerFactory(namespace="myapp"))
    structlog.get_logger().info("unnamed")
    structlog.get_logger("other").info("named")
    assert named(twisted_events, "unnamed")["log_namespace"] == "myapp"
    assert named(twisted_events, "named")["log_namespace"] == "other"


# -- exceptions ---------------------------------------------------------------


class Boom(Exception):
    pass


def explode() -> None:
    raise Boom("the disk is on fire")


def log_with_exception() -> None:
    structlog.get_logger("myapp").exception("it failed")


def log_with_exc_info_true() -> None:
    structlog.get_logger("myapp").error("it failed", exc_info=True)


def log_with_instance(e: BaseException) -> None:
    structlog.get_logger("myapp").error("it failed", exc_info=e)


def log_with_tuple(e: BaseException) -> None:
    structlog.get_logger("myapp").error("it failed", exc_info=sys.exc_info())


FORMS: dict[str, Callable[[BaseException], None]] = {
    "log.exception()": lambda e: log_with_exception(),
    "exc_info=True": lambda e: log_with_exc_info_true(),
    "exc_info=exception": log_with_instance,
    "exc_info=sys.exc_info()": log_with_tuple,
}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("wrapper", ["filtering", "generic"])
def test_every_form_of_exc_info_keeps_the_traceback(
    twisted_events: list[dict[str, Any]], form: str, wrapper: str
) -> None:
    configure(
        TwistedLoggerFactory(),
        structlog.BoundLogger if wrapper == "generic" else None,
    )
    try:
        explode()
    except Boom as e:
        FORMS[form](e)
    event = named(twisted_events, "it failed")
    failure = event["log_failure"]
    assert failure.check(Boom) and str(failure.value) == "the disk is on fire"
    text = eventAsText(event, includeTraceback=True)
    # The traceback goes down to where it was raised.
    assert "Traceback" in text and "in explode" in text and "Boom: the disk is on fire" in text
    assert "exc_info" not in event


def test_no_exception_no_failure(twisted_events: list[dict[str, Any]]) -> None:
    configure(TwistedLoggerFactory())
    log = structlog.get_logger("myapp")
    log.error("no exception being handled", exc_info=True)
    log.info("told there is none", exc_info=False)
    log.exception("exception() outside an except block")
    for name in ("no exception being handled", "told there is none"):
        assert "log_failure" not in named(twisted_events, name)
    assert "log_failure" not in named(twisted_events, "exception() outside an except block")
