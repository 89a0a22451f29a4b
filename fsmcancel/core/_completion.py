"""
The one completion: an operation's outcome, delivered once, after cleanup.

``op.completion`` fires exactly once, after the machine has reached a
terminal state (or failed, or been forced) *and* every release has finished.
It fires with the value given to ``op.succeed()``, the failure given to
``op.fail()`` or raised by a behaviour, or an ``OperationCancelled``.  If
releasing anything failed, a success or failure becomes ``CleanupFailed``
carrying both, and a cancellation carries the errors in ``cleanup_errors``:
neither the outcome nor a cleanup error is ever lost.

Other parties call ``op.observe()``: each gets its own Deferred with the same
outcome, after cleanup, so one observer's callbacks never change what another
sees.  Cancelling an observer's Deferred only detaches that observer.  The
completion is delivered first, then the observers in the order they
subscribed: the owner hears first (in nested operations, the child's own
completion callbacks run before its parent's hear about it).

Twisted errbacks a cancelled Deferred at once unless its canceller fires it.
So the completion's canceller fires it into an inner Deferred that fires only
when cleanup is done, whose canceller does the same, and so on: Twisted
forwards each further cancel to the innermost one, so the completion absorbs
any number of cancels and still fires only after cleanup, with the real
outcome.

Owns: ``completion``, ``_final`` (the innermost Deferred), ``_observers``,
``_outcome`` and ``_done``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from typing_extensions import TypeVar

from fsmcancel.core import _events
from fsmcancel.core._errors import (
    CleanupFailed,
    OperationCancelled,
    OperationIncomplete,
    as_failure,
    safe_text,
)

if TYPE_CHECKING:
    pass

#: The outcome before anything decided one.
NOTHING: Any = object()

T = TypeVar("T", default=Any)

if TYPE_CHECKING:
    from fsmcancel.core._fields import OperationFields as MixinBase
else:
    MixinBase = object


class Completing(Generic[T], MixinBase):
    """
    The outcome half of an operation (mixed into ``Operation``).
    """

    __slots__ = ()

    if TYPE_CHECKING:
        completion: Deferred[T]  # typed by the outcome, so declared here

    @property
    def done(self) -> bool:
        """
        Has the completion fired (or been decided and is firing)?
        """
        return self._done

    def observe(self) -> Deferred[T]:
        """
        A new Deferred that fires with the operation's outcome, after cleanup.

        For everyone except the owner of ``completion``: each observer gets
        its own Deferred, so one observer's callbacks never change what
        another sees.  Cancelling it only detaches that observer (it fails
        with ``CancelledError``); the operation carries on.
        """
        if self._done:
            d: Deferred[T] = Deferred()
            self._deliver(d)
            return d
        if self._observers is None:
            self._observers = []
        observers = self._observers
        d = Deferred(observers.remove)
        observers.append(d)
        return d

    def succeed(self, result: T = None) -> None:  # type: ignore[assignment]
        """
        Record the operation's result.  The completion fires with it once the
        machine reaches a terminal state and cleanup has finished.
        """
        # Not ``isinstance``: Deferred is an ABC (Awaitable), whose instance
        # check costs more than the rest of this method; subclasses are found
        # all the same.
        if Deferred in type(result).__mro__:
            raise TypeError(
                f"{self.name}: op.succeed() was given a Deferred in state {self._state!r}; "
                "watch it (op.watch(d, inputs.got)) and succeed with its result"
            )
        self._set_outcome(result)

    def fail(self, error: BaseException | Failure) -> None:
        """
        Record the operation's failure; like ``succeed``, it is delivered when
        the machine reaches a terminal state and cleanup has finished.
        """
        if not isinstance(error, (BaseException, Failure)):
            raise TypeError(
                f"{self.name}: op.fail() takes an exception or a Failure, not "
                f"{type(error).__name__} {safe_text(error, repr)} (in state {self._state!r})"
            )
        self._set_outcome(error if isinstance(error, Failure) else as_failure(error))

    def _set_outcome(self, outcome: object) -> None:
        if self._done:
            raise RuntimeError(f"{self.name} has already completed")
        self._outcome = outcome

    # -- the chain of inner Deferreds ----------------------------------------

    def _completion_cancelled(self, d: Deferred[Any]) -> None:
        """
        The canceller of the completion and of every inner Deferred: a cancel
        request, then fire ``d`` ourselves so that Twisted does not errback it
        with ``CancelledError`` before cleanup is done.
        """
        self._request_cancel(None)
        if not d.called:
            d.callback(None)

    def _park(self, _: object) -> object:
        """
        The callback on the completion and on every inner Deferred: the
        outcome if there is one, else a new innermost Deferred to wait on.
        """
        if self._done:
            return self._outcome
        inner: Deferred[Any] = Deferred(self._completion_cancelled)
        inner.addCallback(self._park)
        self._final = inner
        return inner

    # -- finishing ---------------------------------------------------------

    def _maybe_finish(self) -> None:
        if not self._finishing or self._done:
            return
        if self._pending:
            self._start_grace()
        else:
            self._finish()

    def _finish(self) -> None:
        result = self._compute_result()
        self._outcome = result
        self._done = True
        self._stop_grace()
        if self._registry is not None:
            self._registry._remove(self.id)
        _events.completed(self, result, self._debug)
        final: Deferred[Any] = self._final if self._final is not None else self.completion
        if not final.called:
            final.callback(None)  # _park now returns the outcome
        observers, self._observers = self._observers, None
        # A copy: an observer's callback may cancel (detach) another one.
        for observer in list(observers or ()):
            if not observer.called:
                self._deliver(observer)

    def _compute_result(self) -> object:
        """
        The one outcome, combining the machine's outcome with cleanup errors.
        """
        errors = tuple(self._cleanup_errors or ())
        outcome = self._outcome
        if outcome is NOTHING:
            if self._cancel_state is not None:
                return as_failure(
                    OperationCancelled(
                        self.name, self._cancel_state, self._cancel_reason, errors, self._forced
                    )
                )
            outcome = as_failure(
                OperationIncomplete(
                    f"{self.name} reached terminal state {self._state!r} without "
                    "calling op.succeed() or op.fail()"
                )
            )
        if errors:
            return as_failure(CleanupFailed(self.name, outcome, errors))
        return outcome

    def _deliver(self, d: Deferred[Any]) -> None:
        result = self._outcome
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)
