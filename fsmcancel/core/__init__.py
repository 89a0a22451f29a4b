"""
The operation machinery: machines whose states own resources, with one
completion and a ``cancel`` input in every state.

Read the modules in this order; their docstrings, in turn, state the
semantics:

1. ``_spec``: what a machine is, as plain data (running, cleanup and
   terminal states; transitions).
2. ``_builder``: declaring a machine (Automat's typed builder, plus state
   kinds and resources).
3. ``_states``: the handles it is written with: ``state.upon(x).to(y)``,
   guards, several states at once.
4. ``_transitions``: what runs on a transition, around your behaviour.
5. ``_guards``: several transitions on one input, chosen by conditions.
6. ``_checks``: what ``build()`` refuses.
7. ``_factory``: starting operations; the input methods.
8. ``_operation``: an operation; ``_fields`` lists the fields each concept
   owns.
9. ``_dispatch``: run to completion; whose mistake an error is.
10. ``_ledger``: states own resources; releasing them.
11. ``_releases``: how each kind of resource is released, and which failures
    only report our own cancellation.
12. ``_group``: child groups: C at a time, done after k successes.
13. ``_cancel``: cancel and force.
14. ``_completion``: the one completion, observers, and the outcome with its
    cleanup errors.
15. ``_errors``: the exceptions, each naming what was wrong.
16. ``_events``: the structlog events.
17. ``_registry``: the live operations, for an inspector.
18. ``_clock``: the injected clock.
"""

from fsmcancel.core._builder import Cancellable, OperationBuilder
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
from fsmcancel.core._group import ChildGroup
from fsmcancel.core._operation import Operation, TransitionRecord
from fsmcancel.core._registry import Registry
from fsmcancel.core._spec import MachineSpec, StateKind, StateSpec, TransitionSpec
from fsmcancel.core._states import DataState, State, States

__all__ = [
    "Cancellable",
    "ChildGroup",
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
    "States",
    "TransitionRecord",
    "TransitionSpec",
    "UnexpectedInput",
]
