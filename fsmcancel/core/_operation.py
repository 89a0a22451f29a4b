"""
A running operation: one machine, the resources its states own, and exactly
one completion.

``Operation`` is what users hold and what behaviours receive.  Its surface:

- outside the machine: ``inputs``, ``completion``, ``observe()``,
  ``cancel()``, ``force()`` and introspection (``state``,
  ``time_in_state``, ``resources``, ``history``, ``describe()``);
- inside behaviours: ``own``, ``watch``, ``call_later``, ``hand_over``,
  ``release``, ``succeed`` and ``fail``, plus ``core`` and ``clock``.

The behaviour lives in one module per concept, mixed in here, each owning
its own fields: `Dispatching` (run to completion, errors), `Ledger` (state
resources), `Cancelling` (cancel and force), `Completing` (the one
completion).  This module only creates the fields and answers questions.

Owns: identity (``id``, ``core``, ``clock``, ``inputs``) and the
introspection properties.  Must not touch: the concepts' logic, which
lives in their modules.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, NamedTuple

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from typing_extensions import TypeVar

from fsmcancel.core import _events
from fsmcancel.core._cancel import Cancelling
from fsmcancel.core._completion import NOTHING, Completing
from fsmcancel.core._dispatch import Dispatching, Queued
from fsmcancel.core._ledger import Ledger
from fsmcancel.core._releases import Resource

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from fsmcancel.core._clock import ReactorTime
    from fsmcancel.core._factory import OperationFactory
    from fsmcancel.core._registry import Registry
    from fsmcancel.core._spec import MachineSpec

I = TypeVar("I")  # noqa: E741 - the input protocol, as in Automat
C = TypeVar("C")
T = TypeVar("T", default=Any)  # the outcome; Any unless the builder says

_ids = itertools.count(1)


class TransitionRecord(NamedTuple):
    """
    One transition in ``Operation.history``: at clock time ``at``, input
    ``input`` moved the machine from ``old`` to ``new`` (equal for a loop).
    """

    at: float
    old: str
    input: str
    new: str


class Operation(Dispatching, Ledger, Cancelling, Completing[T], Generic[I, C, T]):
    """
    One run of a machine built with ``OperationBuilder``.

    Outside the machine, use ``inputs``, ``completion``, ``observe()``,
    ``cancel()``, ``force()`` and the introspection properties.  Behaviours
    receive the operation as their second argument and use ``own``,
    ``watch``, ``call_later``, ``hand_over``, ``release``, ``succeed`` and
    ``fail``.
    """

    __slots__ = (
        "__weakref__",
        "_aborted",
        "_busy",
        "_cancel_reason",
        "_cancel_requests",
        "_cancel_state",
        "_cleanup_errors",
        "_debug",
        "_done",
        "_entered_at",
        "_factory",
        "_final",
        "_finishing",
        "_forced",
        "_from",
        "_grace",
        "_grace_timer",
        "_history",
        "_input",
        "_leaving",
        "_machine",
        "_observers",
        "_outcome",
        "_pending",
        "_queue",
        "_registry",
        "_scope",
        "_state",
        "_trace",
        "_undeclared",
        "clock",
        "completion",
        "core",
        "id",
        "inputs",
    )

    def __init__(
        self,
        factory: OperationFactory[I, C, T],
        core: C,
        clock: ReactorTime,
        registry: Registry | None,
        grace: float | None,
    ) -> None:
        self._factory = factory
        self.core: C = core
        self.clock: ReactorTime = clock
        self.id: int = next(_ids)
        # Dispatching
        self._state: str = factory.spec.initial
        self._from = self._state
        self._aborted = False
        self._entered_at: float = clock.seconds()
        self._queue: deque[Queued] | None = None
        self._busy = False
        self._input = ""
        # Ledger
        self._scope: list[Resource] | None = None
        self._leaving: list[Resource] | None = None
        self._pending: list[tuple[Deferred[Any], Resource]] | None = None
        self._cleanup_errors: list[Failure] | None = None
        self._undeclared: list[tuple[str, str]] | None = None
        # Cancelling
        self._cancel_requests = 0
        self._cancel_reason: str | None = None
        self._cancel_state: str | None = None
        self._forced = False
        self._grace = grace
        self._grace_timer: IDelayedCall | None = None
        # Completing
        self._finishing = False
        self._done = False
        self._outcome: Any = NOTHING
        self._observers: list[Deferred[Any]] | None = None
        self._final: Deferred[Any] | None = None
        # Tracing: one test on the hot path covers both reasons to look.
        self._debug = _events.debug_enabled()
        depth = 0 if registry is None else registry.history
        self._history: deque[TransitionRecord] | None = deque(maxlen=depth) if depth else None
        self._trace = self._debug or self._history is not None
        self.inputs: I = factory._inputs_type(self)
        self._machine: Any = factory._automat(self)
        self.completion: Deferred[T] = Deferred(self._completion_cancelled)
        self.completion.addCallback(self._park)
        self._registry = registry
        if registry is not None:
            registry._add(self)

    # -- introspection -----------------------------------------------------

    @property
    def name(self) -> str:
        """
        ``machine#id``, the name used in logs and errors.
        """
        return f"{self._factory.name}#{self.id}"

    @property
    def machine(self) -> str:
        """
        The name of the machine this operation runs.
        """
        return self._factory.name

    @property
    def spec(self) -> MachineSpec:
        """
        The structure of the machine (for diagrams and test helpers).
        """
        return self._factory.spec

    @property
    def state(self) -> str:
        """
        The name of the current state.
        """
        return self._state

    @property
    def time_in_state(self) -> float:
        """
        Seconds since the current state was entered, by the operation's clock.
        """
        return self.clock.seconds() - self._entered_at

    @property
    def history(self) -> tuple[TransitionRecord, ...]:
        """
        The most recent transitions, oldest first; empty unless the
        operation was created with a ``Registry(history=N)``.
        """
        return tuple(self._history or ())

    def describe(self) -> dict[str, object]:
        """
        A JSON-ready snapshot, for a debugging endpoint.
        """
        return {
            "id": self.id,
            "machine": self.machine,
            "state": self._state,
            "seconds_in_state": round(self.time_in_state, 6),
            "resources": list(self.resources),
            "pending_releases": len(self._pending or ()),
            "cancel_requested": self._cancel_requests > 0,
            "done": self._done,
        }

    def __repr__(self) -> str:
        return f"<Operation {self.name} in {self._state!r}>"
