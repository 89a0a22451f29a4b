"""
fsmcancel: cancellable Twisted operations as Automat state machines.

Each operation is an explicit machine whose states own their resources; a
``cancel`` input is accepted in every state and leads to cleanup; the
operation exposes exactly one completion Deferred, whose canceller feeds that
input.  See the README for the model and ``Operation`` for the exact rules.
"""

from fsmcancel._logging import TwistedLoggerFactory
from fsmcancel._version import __version__
from fsmcancel.core import (
    Cancellable,
    ChildGroup,
    CleanupFailed,
    DataState,
    DefinitionError,
    MachineSpec,
    Operation,
    OperationBuilder,
    OperationCancelled,
    OperationFactory,
    OperationIncomplete,
    ReentrantInputError,
    Registry,
    State,
    States,
    StateSpec,
    TransitionRecord,
    TransitionSpec,
    UnexpectedInput,
)
from fsmcancel.service import OperationService

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
    "OperationService",
    "ReentrantInputError",
    "Registry",
    "State",
    "StateSpec",
    "States",
    "TransitionRecord",
    "TransitionSpec",
    "TwistedLoggerFactory",
    "UnexpectedInput",
    "__version__",
]
