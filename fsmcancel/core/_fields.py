"""
The fields of an operation, and which concept owns each: for type checkers.

``Operation`` is assembled from four mixins, one module each.  Each writes
only the fields it owns and reads a few others, and calls a few methods of
its neighbours.  This Protocol declares all of them once, so that every
mixin type-checks against the same declaration, and so that "who owns what"
is on one screen.  It exists only for type checkers: at run time the
mixins derive from ``object`` and ``Operation`` declares the
``__slots__``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IDelayedCall
    from twisted.python.failure import Failure

    from fsmcancel.core._clock import ReactorTime
    from fsmcancel.core._factory import OperationFactory
    from fsmcancel.core._operation import TransitionRecord
    from fsmcancel.core._registry import Registry
    from fsmcancel.core._releases import Resource

#: An input waiting to run: name, Automat method (None for a cancel request),
#: arguments.
Queued = tuple[str, Callable[..., Any] | None, tuple[Any, ...], dict[str, Any]]


class OperationFields:
    """
    Everything the mixins share.  (A plain class, not a Protocol: mypy
    treats a Protocol's attributes as undeclared in explicit subclasses.)
    """

    # Operation: set once.
    _factory: OperationFactory[Any, Any, Any]
    _machine: Any
    _registry: Registry | None
    _debug: bool
    _trace: bool
    _history: deque[TransitionRecord] | None
    clock: ReactorTime

    @property
    def id(self) -> int:
        raise NotImplementedError

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def machine(self) -> str:
        raise NotImplementedError

    @property
    def state(self) -> str:
        raise NotImplementedError

    # Dispatching (_dispatch.py): run to completion.
    _busy: bool
    _queue: deque[Queued] | None
    _input: str
    _state: str
    _from: str
    _entered_at: float
    _aborted: bool

    def _enqueue(
        self,
        name: str,
        method: Callable[..., Any] | None,
        args: tuple[Any, ...],
        kw: dict[str, Any],
    ) -> None: ...
    def _settle_transition(self) -> None: ...
    def _abort(self, failure: Failure) -> None: ...

    # Ledger (_ledger.py): what states own.
    _scope: list[Resource] | None
    _leaving: list[Resource] | None
    _pending: list[tuple[Deferred[Any], Resource]] | None
    _cleanup_errors: list[Failure] | None
    _undeclared: list[tuple[str, str]] | None

    def _release_all(self, entries: list[Resource], why: str) -> None: ...
    def _release_held(self, why: str) -> None: ...
    def _abandon_pending(self) -> None: ...

    # Cancelling (_cancel.py): cancel, force, grace.
    _cancel_requests: int
    _cancel_reason: str | None
    _cancel_state: str | None
    _forced: bool
    _grace: float | None
    _grace_timer: IDelayedCall | None

    def _request_cancel(self, reason: str | None) -> None: ...
    def _cancel_step(self, reason: str | None, force: bool = False) -> None: ...
    def _start_grace(self) -> None: ...
    def _stop_grace(self) -> None: ...

    # Completing (_completion.py): the one completion.
    _finishing: bool
    _done: bool
    _outcome: Any
    _observers: list[Deferred[Any]] | None
    _final: Deferred[Any] | None

    def _maybe_finish(self) -> None: ...
