"""
Declaring an operation: Automat's typed builder, plus what cancellation needs.

You write what you would write for ``automat.TypeMachineBuilder``: a Protocol
of inputs, states, and ``state.upon(Inputs.x).to(other)`` transitions whose
behaviours are plain functions.  Underneath, a real ``TypeMachineBuilder``
builds the machine; fsmcancel records the structure as it is declared (for
the build checks, diagrams and test helpers) and wraps each behaviour
(``_transitions.py``) so that states can own resources.

Three kinds of state:

- ``state()``: a running state.  It must define ``cancel``, and that
  transition must go to a cleanup or terminal state.  The first one declared
  is the initial state.
- ``cleanup_state()``: the operation is winding down (closing a connection,
  waiting for a child).  ``cancel`` is fsmcancel's business there.
- ``terminal_state()``: reaching one completes the operation once every
  release has finished.  It owns nothing and has no transitions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, Literal, ParamSpec, Protocol, TypeVar, cast, overload

from automat import TypeMachineBuilder

from fsmcancel.core._cancel import DEFAULT_GRACE
from fsmcancel.core._checks import check_inputs, check_structure
from fsmcancel.core._errors import DefinitionError
from fsmcancel.core._factory import OperationFactory, check_grace
from fsmcancel.core._operation import Operation
from fsmcancel.core._spec import MachineSpec, StateKind, StateSpec, TransitionSpec
from fsmcancel.core._transitions import DeclaredState, DeclaredTransition, Transition, wrap_factory

I = TypeVar("I")  # noqa: E741
C = TypeVar("C")
D = TypeVar("D")
R = TypeVar("R")
P = ParamSpec("P")
FP = ParamSpec("FP")


class Cancellable(Protocol):
    """
    The input every operation accepts.  Inherit it in your input Protocol::

        class Download(Cancellable, Protocol):
            def received(self, data: bytes) -> None: ...
    """

    def cancel(self, reason: str | None = None) -> None:
        """
        Stop the operation; ``reason`` is recorded in the ``OperationCancelled``
        and the logs.
        """


class Upon(Generic[I, C, P, R]):
    def __init__(
        self, state: State[I, C] | DataState[I, C, Any, Any], input: Callable[..., Any]
    ) -> None:
        self._state = state
        self._input = input

    def to(
        self, target: State[I, C] | DataState[I, C, Any, P]
    ) -> Transition[Concatenate[I, Operation[I, C], P], R]:
        """
        Declare a transition to ``target``.
        """
        return self._state._builder._transition(self._state._record, self._input, target._record)

    def loop(self) -> Transition[Concatenate[I, Operation[I, C], P], R]:
        """
        Declare a transition back to the same state (its resources stay).
        """
        record = self._state._record
        return self._state._builder._transition(record, self._input, record, loop=True)


class DataUpon(Generic[I, C, D, P, R]):
    def __init__(self, state: DataState[I, C, D, Any], input: Callable[..., Any]) -> None:
        self._state = state
        self._input = input

    def to(
        self, target: State[I, C] | DataState[I, C, Any, P]
    ) -> Transition[Concatenate[I, Operation[I, C], D, P], R]:
        return self._state._builder._transition(self._state._record, self._input, target._record)

    def loop(self) -> Transition[Concatenate[I, Operation[I, C], D, P], R]:
        record = self._state._record
        return self._state._builder._transition(record, self._input, record, loop=True)


@dataclass(frozen=True, eq=False)
class State(Generic[I, C]):
    """
    A state without data (see ``OperationBuilder.state``).
    """

    _builder: OperationBuilder[I, C] = field(repr=False)
    _record: DeclaredState

    @property
    def name(self) -> str:
        return self._record.name

    def upon(self, input: Callable[Concatenate[I, P], R]) -> Upon[I, C, P, R]:
        return Upon(self, self._builder._check_input(input))


@dataclass(frozen=True, eq=False)
class DataState(Generic[I, C, D, FP]):
    """
    A state whose data is built by a factory on entry and passed to the
    behaviours that leave it, as in Automat.
    """

    _builder: OperationBuilder[I, C] = field(repr=False)
    _record: DeclaredState

    @property
    def name(self) -> str:
        return self._record.name

    def upon(self, input: Callable[Concatenate[I, P], R]) -> DataUpon[I, C, D, P, R]:
        return DataUpon(self, self._builder._check_input(input))


class OperationBuilder(Generic[I, C]):
    """
    Declare an operation's machine, then ``build()`` it.

    ``inputs`` is a Protocol whose methods are the inputs; it must have
    ``cancel(self, reason: str | None = None) -> None`` (inherit
    ``Cancellable``).  ``core`` is the type of the object behaviours find as
    ``op.core``.  ``name`` names the machine in logs, errors and diagrams.

    ``unexpected="log"`` makes an input the current state does not accept a
    logged warning instead of an ``UnexpectedInput`` error: for machines fed
    by remote peers, whose mistakes should not become ours.

    ``timeouts`` names the timeout configuration file the machine runs with
    by default; diagrams label its timeout transitions from it.

    ``grace`` is how long the operation may take to clean up (from entering
    a cleanup state, or from finishing with releases still pending) before
    fsmcancel forces it: seconds, or ``None`` to wait forever.  Each
    operation may override it.
    """

    def __init__(
        self,
        inputs: Callable[[], I],
        core: type[C],
        *,
        name: str,
        unexpected: Literal["raise", "log"] = "raise",
        timeouts: str | os.PathLike[str] | None = None,
        grace: float | None = DEFAULT_GRACE,
    ) -> None:
        if unexpected not in ("raise", "log"):
            raise DefinitionError(
                f"{name}: unexpected= must be 'raise' or 'log', not {unexpected!r}"
            )
        self.name = name
        self.unexpected = unexpected
        self.grace = check_grace(f"{name}: grace", grace)
        self._inputs: Any = inputs  # a Protocol class (typed as Automat does)
        self._core = core
        self._automat: TypeMachineBuilder[Any, Any] = TypeMachineBuilder(inputs, Operation)
        self._states: dict[str, DeclaredState] = {}
        self._transitions: list[DeclaredTransition] = []
        self._timeouts: dict[str, str] = {}
        self._timeouts_file = None if timeouts is None else os.fspath(timeouts)
        self._built = False

    # -- states ------------------------------------------------------------

    @overload
    def state(self, name: str, *, resources: Iterable[str] = ()) -> State[I, C]: ...
    @overload
    def state(
        self,
        name: str,
        factory: Callable[Concatenate[I, Operation[I, C], FP], D],
        *,
        resources: Iterable[str] = (),
    ) -> DataState[I, C, D, FP]: ...
    def state(
        self,
        name: str,
        factory: Callable[Concatenate[I, Operation[I, C], FP], D] | None = None,
        *,
        resources: Iterable[str] = (),
    ) -> State[I, C] | DataState[I, C, D, FP]:
        """
        A running state.  With ``factory``, a data state: the factory runs on
        every transition into it (with the input's arguments) and its result
        is passed to behaviours leaving it.  ``resources`` names what the state
        owns, for diagrams and build checks.
        """
        return cast(
            "State[I, C] | DataState[I, C, D, FP]", self._state(name, "running", factory, resources)
        )

    @overload
    def cleanup_state(self, name: str, *, resources: Iterable[str] = ()) -> State[I, C]: ...
    @overload
    def cleanup_state(
        self,
        name: str,
        factory: Callable[Concatenate[I, Operation[I, C], FP], D],
        *,
        resources: Iterable[str] = (),
    ) -> DataState[I, C, D, FP]: ...
    def cleanup_state(
        self,
        name: str,
        factory: Callable[Concatenate[I, Operation[I, C], FP], D] | None = None,
        *,
        resources: Iterable[str] = (),
    ) -> State[I, C] | DataState[I, C, D, FP]:
        """
        A state in which the operation is winding down.
        """
        return cast(
            "State[I, C] | DataState[I, C, D, FP]", self._state(name, "cleanup", factory, resources)
        )

    def terminal_state(self, name: str) -> State[I, C]:
        """
        A state that completes the operation.
        """
        return cast("State[I, C]", self._state(name, "terminal", None, ()))

    def _state(
        self,
        name: str,
        kind: StateKind,
        factory: Callable[..., Any] | None,
        resources: Iterable[str],
    ) -> Any:
        if self._built:
            raise DefinitionError(f"{self.name}: cannot add state {name!r} after build()")
        if name in self._states:
            raise DefinitionError(f"{self.name}: state {name!r} is declared twice")
        resources = tuple(resources)
        if not self._states:
            if factory is not None:
                raise DefinitionError(
                    f"{self.name}: the initial state {name!r} cannot be a data state "
                    "(nothing has happened yet to build its data from)"
                )
            if kind != "running":
                raise DefinitionError(
                    f"{self.name}: the initial state {name!r} must be a running state"
                )
        automat: Any
        if factory is None:
            automat = self._automat.state(name)
        else:
            automat = self._automat.state(name, wrap_factory(factory, name, kind))
        record = DeclaredState(name, kind, resources, automat, factory)
        self._states[name] = record
        if factory is None:
            return State(self, record)
        return DataState(self, record)

    def timeout(self, input: Callable[..., Any], kind: str) -> None:
        """
        Declare that ``input`` is fed by the timeouts of call kind ``kind``,
        so diagrams can label it with the configured rule.
        """
        self._timeouts[self._check_input(input).__name__] = kind

    # -- transitions -------------------------------------------------------

    def _check_input(self, input: Callable[..., Any]) -> Callable[..., Any]:
        name: str | None = getattr(input, "__name__", None)
        declared: object = getattr(self._inputs, name, None) if name else None
        if declared is not input:
            raise DefinitionError(
                f"{self.name}: {input!r} is not an input of {self._inputs.__qualname__}"
            )
        return input

    def _transition(
        self,
        source: DeclaredState,
        input: Callable[..., Any],
        target: DeclaredState,
        loop: bool = False,
    ) -> Transition[Any, Any]:
        if self._built:
            raise DefinitionError(f"{self.name}: cannot add transitions after build()")
        name = input.__name__
        for existing in self._transitions:
            if existing.source is source and existing.input == name:
                raise DefinitionError(
                    f"{self.name}: state {source.name!r} already has a transition upon {name!r}"
                )
        if source.kind == "terminal":
            raise DefinitionError(
                f"{self.name}: terminal state {source.name!r} cannot have transitions "
                f"(upon {name!r}); the operation is complete there"
            )
        if name == "cancel":
            if source.kind == "cleanup":
                raise DefinitionError(
                    f"{self.name}: cleanup state {source.name!r} cannot define cancel: "
                    "fsmcancel handles it there (the operation is already finishing)"
                )
            if target.kind == "running":
                raise DefinitionError(
                    f"{self.name}: cancel in {source.name!r} must lead to a cleanup or "
                    f"terminal state, not to running state {target.name!r}"
                )
        if source.kind == "cleanup" and target.kind == "running":
            raise DefinitionError(
                f"{self.name}: cleanup state {source.name!r} cannot lead back to running "
                f"state {target.name!r} (upon {name!r}): a cancel ignored while winding "
                "down would be lost"
            )
        record = DeclaredTransition(source, name, target, loop)
        self._transitions.append(record)
        return Transition(self, record, input)

    # -- build -------------------------------------------------------------

    def build(self) -> OperationFactory[I, C]:
        """
        Check the definition and return the factory of operations.

        Refused, with every offending state named: no cancel input; a
        running state without a ``cancel`` transition; no terminal state; a
        terminal state declaring resources; a state unreachable from the
        initial one; a state from which no terminal state can be reached; a
        transition declared without a behaviour or ``returns``.
        """
        if self._built:
            raise DefinitionError(f"{self.name}: build() was already called")
        check_inputs(self.name, self._inputs)
        if not self._states:
            raise DefinitionError(f"{self.name}: the machine has no states")
        incomplete = [t for t in self._transitions if not t.done]
        if incomplete:
            raise DefinitionError(
                f"{self.name}: transitions without a behaviour or .returns(): "
                + ", ".join(f"{t.source.name} --{t.input}--> {t.target.name}" for t in incomplete)
            )
        spec = self._spec()
        check_structure(spec)
        self._built = True
        try:
            automat = self._automat.build()
        except ValueError as e:
            raise DefinitionError(f"{self.name}: {e}") from None
        return OperationFactory(self, spec, automat)

    def _spec(self) -> MachineSpec:
        states = tuple(StateSpec(s.name, s.kind, s.resources) for s in self._states.values())
        transitions = [
            TransitionSpec(
                t.source.name,
                t.input,
                t.target.name,
                t.output,
                timeout=self._timeouts.get(t.input),
            )
            for t in self._transitions
        ]
        transitions += [
            TransitionSpec(s.name, "cancel", s.name, None, automatic=True)
            for s in self._states.values()
            if s.kind != "running"
        ]
        return MachineSpec(
            self.name, states[0].name, states, tuple(transitions), self._timeouts_file
        )
