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
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import structlog
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from fsmcancel.core._ledger import Resource

_LOG = structlog.get_logger("fsmcancel")


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
    Is the ``fsmcancel`` logger enabled for debug events right now?
    """
    logger = _LOG.bind()
    check = getattr(logger, "is_enabled_for", None)
    return True if check is None else bool(check(logging.DEBUG))


def transition(op: Subject, old: str, input: str, new: str, seconds: float) -> None:
    _LOG.debug(
        "transition",
        op=op.id,
        machine=op.machine,
        old=old,
        input=input,
        new=new,
        seconds=seconds,
    )


def release(op: Subject, entry: Resource, why: str) -> None:
    _LOG.debug(
        "release",
        op=op.id,
        machine=op.machine,
        state=entry.owner,
        resource=entry.describe(),
        why=why,
    )


def dropped(op: Subject, input: str, detail: str) -> None:
    _LOG.warning(
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
    _LOG.info(event, op=op.id, machine=op.machine, state=op.state, reason=reason)


def abandoned(op: Subject, entry: Resource) -> None:
    _LOG.warning("release abandoned", op=op.id, machine=op.machine, resource=entry.describe())


def failed(op: Subject, state: str, failure: Failure) -> None:
    _LOG.info(
        "operation failed",
        op=op.id,
        machine=op.machine,
        state=state,
        error=repr(failure.value),
    )


def cleanup_error(op: Subject, failure: Failure, entry: Resource, detail: str = "") -> None:
    _LOG.error(
        "cleanup error",
        op=op.id,
        machine=op.machine,
        state=entry.owner,
        resource=entry.describe(),
        error=repr(failure.value),
        detail=detail,
        exc_info=(type(failure.value), failure.value, failure.getTracebackObject()),  # type: ignore[no-untyped-call]
    )


def completed(op: Subject, result: object, debug: bool) -> None:
    if not isinstance(result, Failure):
        if debug:
            _LOG.debug("completed", op=op.id, machine=op.machine, state=op.state)
        return
    from fsmcancel.core._errors import OperationCancelled

    outcome = "cancelled" if isinstance(result.value, OperationCancelled) else "failed"
    _LOG.info(
        "completed",
        op=op.id,
        machine=op.machine,
        state=op.state,
        outcome=outcome,
        error=str(result.value),
    )
