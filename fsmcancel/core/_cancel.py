"""
Cancel: how a request to stop becomes cleanup, and how cleanup is forced.

``op.completion.cancel()``, ``op.cancel(reason)`` and the machine's
``cancel`` input are one request.  The first request in a running state is
recognised there: its reason and state are recorded and the machine's own
``cancel`` transition runs (to a cleanup or terminal state).  A first
request in a cleanup or terminal state changes nothing: the operation is
already finishing with its own outcome.  Any *further* request before
completion forces it: pending asynchronous releases are cancelled (a child
operation being released is forced in turn), resources still held are
released, and the completion fires at once, with the outcome already decided
if there is one, else ``OperationCancelled(forced=True)``.  Requests after
completion do nothing.  None of them ever raises.

Owns: ``_cancel_requests``, ``_cancel_reason``, ``_cancel_state`` and
``_forced``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fsmcancel.core import _events
from fsmcancel.core._errors import as_failure

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from fsmcancel.core._factory import OperationFactory
    from fsmcancel.core._ledger import Resource


class Cancelling:
    """
    The cancel half of an operation (mixed into ``Operation``).
    """

    if not TYPE_CHECKING:  # mypy would refuse assignments to fields declared below
        __slots__ = ()

    if TYPE_CHECKING:
        _cancel_requests: int
        _cancel_reason: str | None
        _cancel_state: str | None
        _forced: bool
        _busy: bool
        _done: bool
        _finishing: bool
        _input: str
        _state: str
        _leaving: list[Resource] | None
        _queue: deque[tuple[str, Callable[..., Any] | None, tuple[Any, ...], dict[str, Any]]] | None
        _factory: OperationFactory[Any, Any]
        _machine: Any

        @property
        def id(self) -> int: ...
        @property
        def machine(self) -> str: ...
        @property
        def state(self) -> str: ...

        def _enqueue(
            self,
            name: str,
            method: Callable[..., Any] | None,
            args: tuple[Any, ...],
            kw: dict[str, Any],
        ) -> None: ...
        def _settle_transition(self) -> None: ...
        def _maybe_finish(self) -> None: ...
        def _abort(self, failure: Failure) -> None: ...
        def _release_held(self, why: str) -> None: ...
        def _abandon_pending(self) -> None: ...

    def cancel(self, reason: str | None = None) -> None:
        """
        Ask the operation to stop; ``reason`` says who asked and why.

        Same as cancelling ``completion`` or feeding the ``cancel`` input: see
        this module's docstring for what a first and a further request do.
        Never raises.
        """
        self._request_cancel(reason)

    def force(self, reason: str | None = None) -> None:
        """
        Stop waiting for cleanup: cancel pending asynchronous releases (a
        child operation being released is forced in turn), release what is
        still held, and fire the completion now, with the outcome already
        decided if there is one, else ``OperationCancelled(forced=True)``.

        A deliberate call, for a shutdown whose grace period ran out.  Never
        raises; does nothing once the operation has completed.
        """
        if self._done:
            return
        if self._cancel_requests == 0:
            self._request_cancel(reason)
        if not self._done:
            self._cancel_requests = max(self._cancel_requests, 1)
            self._request_cancel(reason)

    def _request_cancel(self, reason: str | None) -> None:
        if self._done:
            return
        if self._busy:
            self._enqueue("cancel", None, (reason,), {})
            return
        self._busy = True
        self._input = "cancel"
        self._cancel_step(reason)
        if self._leaving is not None or self._queue:
            self._settle_transition()
        self._busy = False
        if self._finishing:
            self._maybe_finish()

    def _cancel_step(self, reason: str | None) -> None:
        """
        Decide what one cancel request means now (see the module docstring).
        Runs while busy; never raises.
        """
        if self._done:
            return
        self._cancel_requests += 1
        if self._cancel_requests > 1:
            self._force(reason)
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
        _events.cancel(self, "cancel forced", reason)
        self._forced = True
        if self._cancel_state is None:
            self._cancel_reason = reason
            self._cancel_state = self._state
        self._finishing = True
        self._release_held("forced")
        self._abandon_pending()
