"""
Cancel: how a request to stop becomes cleanup, and how cleanup is forced.

``op.cancel(reason)``, ``op.completion.cancel()`` and the machine's
``cancel`` input are one request:

- The first request in a running state is recognised there: its reason and
  state are recorded and the machine's own ``cancel`` transition runs (to a
  cleanup or terminal state).
- A first request in a cleanup or terminal state changes nothing: the
  operation is already finishing with its own outcome, as when you cancel a
  Deferred that has fired.
- Every further request is idempotent: it changes nothing.  Twisted code
  cancels defensively and more than once (``addTimeout``,
  ``DeferredList.cancel()``, a protocol's ``connectionLost``); none of that
  may turn a polite cleanup into a forced one.  Twisted, Trio and asyncio
  treat a repeated cancel the same way.

Forcing is a deliberate act: ``op.force(reason)``, or the cleanup *grace*
expiring (``grace=`` on the builder or per operation, 30 s by default,
counted from the moment the operation starts winding down: it enters a
cleanup state, or is finishing with releases still pending).  Forcing
cancels pending asynchronous releases (a child operation being released is
forced in turn), releases what is still held, and fires the completion at
once, with the outcome already decided if there is one, else
``OperationCancelled(forced=True)``.

None of these ever raises, whatever the reason object is; requests after
completion do nothing.

Owns: ``_cancel_requests``, ``_cancel_reason``, ``_cancel_state``,
``_forced``, ``_grace`` and ``_grace_timer``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fsmcancel.core import _events
from fsmcancel.core._errors import as_failure, safe_text

if TYPE_CHECKING:
    pass

#: The cleanup grace when neither the machine nor the operation sets one.
DEFAULT_GRACE = 30.0


def reason_text(reason: object) -> str | None:
    """
    A cancel reason as recorded: text, computed once, never raising.
    """
    return None if reason is None else safe_text(reason)


if TYPE_CHECKING:
    from fsmcancel.core._fields import OperationFields as MixinBase
else:
    MixinBase = object


class Cancelling(MixinBase):
    """
    The cancel half of an operation (mixed into ``Operation``).
    """

    __slots__ = ()

    def cancel(self, reason: str | None = None) -> None:
        """
        Ask the operation to stop; ``reason`` says who asked and why.

        Same as cancelling ``completion`` or feeding the ``cancel`` input: the
        first request runs the machine's cancel transition, later ones change
        nothing (see this module's docstring).  Never raises.
        """
        self._request_cancel(reason_text(reason))

    def force(self, reason: str | None = None) -> None:
        """
        Stop waiting for cleanup: cancel first if nobody has, then cancel
        pending asynchronous releases (a child operation being released is
        forced in turn), release what is still held, and fire the completion
        now, with the outcome already decided if there is one, else
        ``OperationCancelled(forced=True)``.

        A deliberate call, for a shutdown whose grace period ran out.  Never
        raises; does nothing once the operation has completed.
        """
        reason = reason_text(reason)
        if self._done:
            return
        if self._cancel_requests == 0:
            self._request_cancel(reason)
        if self._done:
            return
        if self._busy:
            self._enqueue("cancel", None, (reason, True), {})
            return
        self._busy = True
        self._input = "cancel"
        self._force(reason)
        if self._queue:
            self._settle_transition()
        self._busy = False
        self._maybe_finish()

    def _request_cancel(self, reason: str | None) -> None:
        if self._done:
            return
        if self._busy:
            self._enqueue("cancel", None, (reason, False), {})
            return
        self._busy = True
        self._input = "cancel"
        self._cancel_step(reason)
        if self._leaving is not None or self._queue:
            self._settle_transition()
        self._busy = False
        if self._finishing:
            self._maybe_finish()

    def _cancel_step(self, reason: str | None, force: bool = False) -> None:
        """
        Decide what one cancel request means now (see the module docstring).
        Runs while busy; never raises.
        """
        if self._done:
            return
        if force:
            self._force(reason)
            return
        self._cancel_requests += 1
        if self._cancel_requests > 1:
            if self._debug:
                _events.cancel_repeated(self, reason)
            return
        if self._finishing or self._factory._kinds[self._state] != "running":
            _events.cancel(self, "cancel too late: already finishing", reason)
            return
        self._cancel_reason = reason
        self._cancel_state = self._state
        _events.cancel(self, "cancel", reason)
        try:
            self._factory._cancel_method(self._machine, reason)
        except Exception:
            self._abort(as_failure())

    def _force(self, reason: str | None) -> None:
        """
        Stop waiting for cleanup: release what is still held, cancel pending
        releases, and let the completion fire as soon as we are not busy.
        """
        if self._done or self._forced:
            return
        _events.cancel(self, "cancel forced", reason)
        self._forced = True
        if self._cancel_state is None:
            self._cancel_reason = reason
            self._cancel_state = self._state
        self._finishing = True
        self._release_held("forced")
        self._abandon_pending()

    # -- the cleanup grace -------------------------------------------------

    def _start_grace(self) -> None:
        """
        The operation has started winding down: force it if it is still not
        done when the grace expires.  Idempotent.
        """
        if self._grace is None or self._grace_timer is not None or self._done:
            return
        self._grace_timer = self.clock.callLater(self._grace, self._grace_expired)

    def _grace_expired(self) -> None:
        self._grace_timer = None
        _events.grace_expired(self, self._grace or 0.0)
        self.force(f"cleanup grace of {self._grace:g}s expired")

    def _stop_grace(self) -> None:
        timer, self._grace_timer = self._grace_timer, None
        if timer is not None and timer.active():
            timer.cancel()
