"""
The exceptions fsmcancel raises or delivers.

Every error names what was wrong: the operation, the state, the input.  A
user reading a traceback from a production log should not have to know how
fsmcancel is built to understand it.

Owns: the exception types and ``safe_text``.  Must not touch: operations
(errors are built from names, not live objects).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure


class DefinitionError(Exception):
    """
    A machine definition breaks one of fsmcancel's guarantees.

    Raised by ``OperationBuilder.build()``, so the mistake surfaces when the
    module is imported, not when a rare path runs in production.
    """


class UnexpectedInput(Exception):
    """
    An input arrived that the operation's current state does not accept.

    This is raised to whoever fed the input; the operation is unaffected.
    Plain Automat raises ``NoTransition`` with internal state objects in it;
    this names what a user wrote instead.
    """

    def __init__(self, operation: str, state: str, input: str, detail: str = "") -> None:
        self.operation = operation
        self.state = state
        self.input = input
        if detail in _TOO_LATE:
            # Whether the state would accept it is beside the point.
            message = (
                f"{operation}: input {input!r} arrived {_TOO_LATE[detail]} (in state {state!r})"
            )
        else:
            message = f"{operation}: input {input!r} is not accepted in state {state!r}"
            if detail:
                message += f" ({detail})"
        super().__init__(message)


_TOO_LATE = {
    "the operation has completed": "after the operation completed",
    "the operation is finishing": "while the operation is finishing",
}


class ReentrantInputError(Exception):
    """
    An input that returns a value was fed while a transition was running.

    Inputs fed from inside a behaviour or a release are queued and run after
    the current transition (run to completion).  A queued input cannot
    return anything to its caller, so only inputs declared ``-> None`` may be
    fed re-entrantly.
    """


class OperationCancelled(CancelledError):
    """
    The operation was cancelled.

    A subclass of Twisted's ``CancelledError``, so code that traps
    ``CancelledError`` keeps working.  It records who asked and where it was
    noticed, because with asynchronous code both matter (seed 001): the
    ``reason`` given to ``cancel``, and the ``state`` the operation was in when
    the cancel was recognised.

    ``cleanup_errors`` holds every failure raised while releasing resources;
    they are also logged.  ``forced`` is true when fsmcancel stopped waiting
    for asynchronous cleanup: ``op.force()`` was called, or the cleanup
    grace period expired.
    """

    def __init__(
        self,
        operation: str,
        state: str,
        reason: str | None = None,
        cleanup_errors: Sequence[Failure] = (),
        forced: bool = False,
    ) -> None:
        self.operation = operation
        self.state = state
        self.reason = reason
        self.cleanup_errors = tuple(cleanup_errors)
        self.forced = forced
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.operation} cancelled in state {self.state!r}"
        if self.reason is not None:
            text += f": {self.reason}"
        if self.forced:
            text += " (cleanup forced)"
        if self.cleanup_errors:
            text += f"; {len(self.cleanup_errors)} cleanup error(s): " + "; ".join(
                _describe(f) for f in self.cleanup_errors
            )
        return text

    def __reduce__(self) -> tuple[object, ...]:
        return (
            OperationCancelled,
            (self.operation, self.state, self.reason, self.cleanup_errors, self.forced),
        )


class CleanupFailed(Exception):
    """
    Releasing the operation's resources failed.

    Carries both what the operation produced (``outcome``: its result, or the
    ``Failure`` it failed with) and every cleanup failure (``errors``), so that
    neither is lost.
    """

    def __init__(self, operation: str, outcome: object, errors: Sequence[Failure]) -> None:
        self.operation = operation
        self.outcome = outcome
        self.errors = tuple(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        if isinstance(self.outcome, Failure):
            what = f"failed with {_describe(self.outcome)}"
        else:
            what = f"produced {safe_text(self.outcome, repr)}"
        errors = "; ".join(_describe(f) for f in self.errors)
        return f"{self.operation} {what}, then cleanup failed: {errors}"

    def __reduce__(self) -> tuple[object, ...]:
        return (CleanupFailed, (self.operation, self.outcome, self.errors))


class OperationIncomplete(Exception):
    """
    The machine reached a terminal state without an outcome.

    A behaviour on the way to a terminal state must call ``op.succeed()`` or
    ``op.fail()`` (or the operation must have been cancelled); otherwise the
    completion would fire with a value nobody chose.
    """


def _describe(failure: Failure) -> str:
    return f"{type(failure.value).__name__}: {safe_text(failure.value)}"


def safe_text(obj: object, render: Callable[[object], str] = str) -> str:
    """
    ``str(obj)`` (or ``render(obj)``) that cannot raise.

    Reasons, results and exceptions come from user code, and their
    ``__str__`` may fail; an error message, a log event or a cancel must
    never fail because of that (a cancel that raised half-way would leave
    the operation unable to complete).
    """
    if type(obj) is str and render is str:
        return obj
    try:
        return render(obj)
    except Exception:
        return f"<{type(obj).__qualname__} object at {id(obj):#x} (unprintable)>"


def as_failure(error: BaseException | None = None) -> Failure:
    """
    A ``Failure`` of ``error``, or of the exception being handled.

    Twisted's ``Failure`` constructor is untyped; this is the one typed door.
    """
    return Failure(error)  # type: ignore[no-untyped-call]
