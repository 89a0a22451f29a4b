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
sees.  Cancelling an observer's Deferred only detaches that observer.

Twisted errbacks a cancelled Deferred at once unless its canceller fires it.
So the completion's canceller fires it into an inner Deferred that fires only
when cleanup is done; a further cancel is forwarded there by Twisted, and so
on: the completion cannot fire before cleanup, however often it is
cancelled.

Owns: ``completion``, ``_final`` (the inner Deferred), ``_observers``,
``_outcome`` and ``_done``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fsmcancel.core import _events
from fsmcancel.core._errors import (
    CleanupFailed,
    OperationCancelled,
    OperationIncomplete,
    as_failure,
)

if TYPE_CHECKING:
    from fsmcancel.core._ledger import Resource
    from fsmcancel.core._registry import Registry

#: The outcome before anything decided one.
NOTHING: Any = object()


class Completing:
    """
    The outcome half of an operation (mixed into ``Operation``).
    """

    if not TYPE_CHECKING:  # mypy would refuse assignments to fields declared below
        __slots__ = ()

    if TYPE_CHECKING:
        completion: Deferred[Any]
        _final: Deferred[Any] | None
        _observers: list[Deferred[Any]] | None
        _outcome: Any
        _done: bool
        _finishing: bool
        _pending: list[tuple[Deferred[Any], Resource]] | None
        _cleanup_errors: list[Failure] | None
        _cancel_state: str | None
        _cancel_reason: str | None
        _forced: bool
        _registry: Registry | None
        _state: str
        _debug: bool

        @property
        def id(self) -> int: ...
        @property
        def name(self) -> str: ...
        @property
        def machine(self) -> str: ...
        @property
        def state(self) -> str: ...

        def _request_cancel(self, reason: str | None) -> None: ...

    @property
    def done(self) -> bool:
        """
        Has the completion fired (or been decided and is firing)?
        """
        return self._done

    def observe(self) -> Deferred[Any]:
        """
        A new Deferred that fires with the operation's outcome, after cleanup.

        For everyone except the owner of ``completion``: each observer gets
        its own Deferred, so one observer's callbacks never change what
        another sees.  Cancelling it only detaches that observer (it fails
        with ``CancelledError``); the operation carries on.
        """
        if self._done:
            d: Deferred[Any] = Deferred()
            self._deliver(d)
            return d
        if self._observers is None:
            self._observers = []
        observers = self._observers
        d = Deferred(observers.remove)
        observers.append(d)
        return d

    def succeed(self, result: object = None) -> None:
        """
        Record the operation's result.  The completion fires with it once the
        machine reaches a terminal state and cleanup has finished.
        """
        self._set_outcome(result)

    def fail(self, error: BaseException | Failure) -> None:
        """
        Record the operation's failure; like ``succeed``, it is delivered when
        the machine reaches a terminal state and cleanup has finished.
        """
        self._set_outcome(error if isinstance(error, Failure) else as_failure(error))

    def _set_outcome(self, outcome: object) -> None:
        if self._done:
            raise RuntimeError(f"{self.name} has already completed")
        self._outcome = outcome

    # -- the inner Deferred ------------------------------------------------

    def _completion_cancelled(self, completion: Deferred[Any]) -> None:
        self._request_cancel(None)
        # Fire the completion ourselves so Twisted does not errback it before
        # cleanup is done; _chain_final parks it on an inner Deferred until
        # the real outcome is known.
        if not completion.called:
            completion.callback(None)

    def _chain_final(self, _: object) -> object:
        if self._done:
            return self._outcome
        self._final = Deferred(self._final_cancelled)
        return self._final

    def _final_cancelled(self, final: Deferred[Any]) -> None:
        self._request_cancel(None)

    # -- finishing ---------------------------------------------------------

    def _maybe_finish(self) -> None:
        if self._finishing and not self._pending and not self._done:
            self._finish()

    def _finish(self) -> None:
        result = self._compute_result()
        self._outcome = result
        self._done = True
        if self._registry is not None:
            self._registry._remove(self.id)
        _events.completed(self, result, self._debug)
        observers, self._observers = self._observers, None
        # A copy: an observer's callback may cancel (detach) another one.
        for observer in list(observers or ()):
            if not observer.called:
                self._deliver(observer)
        final = self._final
        if final is not None:
            if not final.called:
                if isinstance(result, Failure):
                    final.errback(result)
                else:
                    final.callback(result)
        elif not self.completion.called:
            self.completion.callback(None)

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
