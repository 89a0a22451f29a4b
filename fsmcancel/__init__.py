"""
fsmcancel: cancellable Twisted operations as Automat state machines.

Each operation is an explicit machine whose states own their resources; a
``cancel`` input is accepted in every state and leads to cleanup; the
operation exposes exactly one completion Deferred, whose canceller feeds that
input.  See the README for the model and ``Operation`` for the exact rules.
"""

from fsmcancel._builder import (
    Cancellable,
    DataState,
    OperationBuilder,
    OperationFactory,
    State,
)
from fsmcancel._errors import (
    CleanupFailed,
    DefinitionError,
    OperationCancelled,
    OperationIncomplete,
    ReentrantInputError,
    UnexpectedInput,
)
from fsmcancel._logging import TwistedLoggerFactory
from fsmcancel._operation import Operation, TransitionRecord
from fsmcancel._registry import Registry
from fsmcancel._spec import MachineSpec, StateSpec, TransitionSpec
from fsmcancel._version import __version__

# Last: the service module imports the core names above from this package.
from fsmcancel.service import OperationService

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
    "OperationService",
    "ReentrantInputError",
    "Registry",
    "State",
    "StateSpec",
    "TransitionRecord",
    "TransitionSpec",
    "TwistedLoggerFactory",
    "UnexpectedInput",
    "__version__",
]
