"""
The operation machinery: machines whose states own resources, with one
completion and a ``cancel`` input in every state.

Read the modules in this order; their docstrings, in turn, state the
semantics:

1. ``_spec``: what a machine is, as plain data (running, cleanup and
   terminal states; transitions).
2. ``_builder``: declaring a machine (Automat's typed builder, plus state
   kinds and resources).
3. ``_transitions``: what runs on a transition, around your behaviour.
4. ``_checks``: what ``build()`` refuses.
5. ``_factory``: starting operations; the input methods.
6. ``_operation``: an operation, and the fields each concept owns.
7. ``_dispatch``: run to completion; whose mistake an error is.
8. ``_ledger``: states own resources; releasing them.
9. ``_releases``: how each kind of resource is released, and which failures
   only report our own cancellation.
10. ``_cancel``: cancel and force.
11. ``_completion``: the one completion, observers, and the outcome with its
    cleanup errors.
12. ``_errors``: the exceptions, each naming what was wrong.
13. ``_events``: the structlog events.
14. ``_registry``: the live operations, for an inspector.
15. ``_clock``: the injected clock.
"""

from fsmcancel.core._builder import Cancellable, DataState, OperationBuilder, State
from fsmcancel.core._clock import ReactorTime
from fsmcancel.core._errors import (
    CleanupFailed,
    DefinitionError,
    OperationCancelled,
    OperationIncomplete,
    ReentrantInputError,
    UnexpectedInput,
)
from fsmcancel.core._factory import OperationFactory
from fsmcancel.core._operation import Operation, TransitionRecord
from fsmcancel.core._registry import Registry
from fsmcancel.core._spec import MachineSpec, StateKind, StateSpec, TransitionSpec

__all__ = [
    "Cancellable",
    "CleanupFailed",
    "DataState",
    "DefinitionError",
    "MachineSpec",
    "Operation",
    "OperationBuilder",
    "OperationCancelled",
    "OperationFactory",
    "OperationIncomplete",
    "ReactorTime",
    "ReentrantInputError",
    "Registry",
    "State",
    "StateKind",
    "StateSpec",
    "TransitionRecord",
    "TransitionSpec",
    "UnexpectedInput",
]
