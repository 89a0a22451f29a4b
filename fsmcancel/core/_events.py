"""
The structlog events an operation emits, all under the logger ``fsmcancel``.

Every event names the operation (``op``, its id) and its ``machine``, so a
production log can be followed one operation at a time.  The event names and
fields are documented in the README's Logging section; they are part of the
public surface, so they are spelled out here once rather than at each call
site.

Per-transition and per-release events are debug events.  Even a filtered-out
structlog call costs about a third of a transition, so whether debug events
are wanted is asked once, when an operation is created (`debug_enabled`), and
the hot path tests a plain attribute instead of calling the logger.

A library is quiet unless the application asks it to speak.  structlog's
unconfigured default prints every level to stdout, which would make each
operation print a line per transition in a program that never asked for
logging.  So until the application configures structlog, fsmcancel keeps
to warnings and errors (a cleanup error, an input dropped), on stderr, and
emits nothing below: no debug events are even produced.  Configuring
structlog (``structlog.configure(...)``) hands every event to the
application's configuration, filtering included.

Owns: the event names and fields, and the quiet default.  Must not touch:
an operation's state (it only reads ``id``, ``machine`` and ``state``).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from twisted.python.failure import Failure

from fsmcancel.core._errors import OperationCancelled, safe_text

if TYPE_CHECKING:
    from fsmcancel.core._releases import Resource

_LOG = structlog.get_logger("fsmcancel")
_WARNINGS_ONLY = structlog.make_filtering_bound_logger(logging.WARNING)


def _logger() -> Any:
    """
    The application's structlog configuration, or, while it has none, a
    logger that drops everything below WARNING and writes to stderr.
    """
    if structlog.is_configured():
        return _LOG
    return structlog.wrap_logger(structlog.PrintLogger(sys.stderr), wrapper_class=_WARNINGS_ONLY)


class Subject(Protocol):
    """
    What every event says of its operation.
    """

    @property
    def id(self) -> int: ...
    @property
    def machine(self) -> str: ...
    @property
    def state(self) -> str: ...


def debug_enabled() -> bool:
    """
    Is the ``fsmcancel`` logger enabled for debug events right now?  Never
    while structlog is unconfigured.
    """
    if not structlog.is_configured():
        return False
    logger = _LOG.bind()
    check = getattr(logger, "is_enabled_for", None)
    return True if check is None else bool(check(logging.DEBUG))


def transition(op: Subject, old: str, input: str, new: str, seconds: float) -> None:
    _logger().debug(
        "transition",
        op=op.id,
        machine=op.machine,
        old=old,
        input=input,
        new=new,
        seconds=seconds,
    )


def release(op: Subject, entry: Resource, why: str) -> None:
    _logger().debug(
        "release",
        op=op.id,
        machine=op.machine,
        state=entry.owner,
        resource=entry.describe(),
        why=why,
    )


def undeclared(op: Subject, entry: Resource, declared: tuple[str, ...]) -> None:
    _logger().warning(
        "undeclared resource",
        op=op.id,
        machine=op.machine,
        state=op.state,
        resource=entry.describe(),
        declared=list(declared),
    )


def dropped(op: Subject, input: str, detail: str) -> None:
    _logger().warning(
        "unexpected input ignored",
        op=op.id,
        machine=op.machine,
        state=op.state,
        input=input,
        detail=detail,
    )


def cancel(op: Subject, event: str, reason: str | None) -> None:
    """
    ``cancel``, ``cancel too late: already finishing`` or ``cancel forced``.
    """
    _logger().info(event, op=op.id, machine=op.machine, state=op.state, reason=reason)


def cancel_repeated(op: Subject, reason: str | None) -> None:
    _logger().debug(
        "cancel repeated: nothing to do",
        op=op.id,
        machine=op.machine,
        state=op.state,
        reason=reason,
    )


def grace_expired(op: Subject, grace: float) -> None:
    _logger().warning(
        "cleanup grace expired", op=op.id, machine=op.machine, state=op.state, grace=grace
    )


def abandoned(op: Subject, entry: Resource) -> None:
    _logger().warning("release abandoned", op=op.id, machine=op.machine, resource=entry.describe())


def failed(op: Subject, state: str, failure: Failure) -> None:
    _logger().info(
        "operation failed",
        op=op.id,
        machine=op.machine,
        state=state,
        error=safe_text(failure.value, repr),
    )


def failed_again(op: Subject, failure: Failure) -> None:
    _logger().warning(
        "error after failure",
        op=op.id,
        machine=op.machine,
        state=op.state,
        error=safe_text(failure.value, repr),
    )


def cleanup_error(op: Subject, failure: Failure, entry: Resource, detail: str = "") -> None:
    _logger().error(
        "cleanup error",
        op=op.id,
        machine=op.machine,
        state=entry.owner,
        resource=entry.describe(),
        error=safe_text(failure.value, repr),
        detail=detail,
        exc_info=(type(failure.value), failure.value, failure.getTracebackObject()),  # type: ignore[no-untyped-call]
    )


def completed(op: Subject, result: object, debug: bool) -> None:
    if not isinstance(result, Failure):
        if debug:
            _logger().debug("completed", op=op.id, machine=op.machine, state=op.state)
        return
    outcome = "cancelled" if isinstance(result.value, OperationCancelled) else "failed"
    _logger().info(
        "completed",
        op=op.id,
        machine=op.machine,
        state=op.state,
        outcome=outcome,
        error=safe_text(result.value),
    )
