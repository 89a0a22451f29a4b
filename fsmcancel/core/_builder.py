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

Owns: the declared states and transitions until ``build()``, and the
Automat builder underneath.  Must not touch: operations (it only builds
their factory).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, Concatenate, Generic, Literal, ParamSpec, Protocol, cast, overload

from automat import TypeMachineBuilder
from typing_extensions import TypeVar

from fsmcancel.core._cancel import DEFAULT_GRACE
from fsmcancel.core._checks import check_guards, check_inputs, check_structure
from fsmcancel.core._errors import DefinitionError
from fsmcancel.core._factory import OperationFactory, check_grace
from fsmcancel.core._guards import SyntheticInputs
from fsmcancel.core._operation import Operation
from fsmcancel.core._spec import MachineSpec, StateKind, StateSpec, TransitionSpec
from fsmcancel.core._states import DataState, State
from fsmcancel.core._transitions import (
    DeclaredState,
    DeclaredTransition,
    Transition,
    refuse_async,
    wrap_factory,
)

I = TypeVar("I")  # noqa: E741
C = TypeVar("C")
T = TypeVar("T", default=Any)
D = TypeVar("D")
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


Children = Iterable["OperationFactory[Any, Any, Any] | str"]


class OperationBuilder(Generic[I, C, T]):
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

    ``outcome`` is the type of the operation's result, so that
    ``op.completion`` is a ``Deferred[outcome]`` and ``op.succeed()`` is
    checked by mypy and pyright; for a type that is not a class (``str |
    None``), write ``OperationBuilder[Inputs, Core, str | None](...)``
    instead.  It is not checked at run time.
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
        outcome: type[T] | None = None,
    ) -> None:
        if unexpected not in ("raise", "log"):
            raise DefinitionError(
                f"{name}: unexpected= must be 'raise' or 'log', not {unexpected!r}"
            )
        self.name = name
        self.unexpected = unexpected
        self.grace = check_grace(f"{name}: grace", grace)
        self.outcome = outcome
        self._inputs: Any = inputs  # a Protocol class (typed as Automat does)
        self._core = core
        self._synthetic = SyntheticInputs(cast(type, inputs))
        self._automat: TypeMachineBuilder[Any, Any] = TypeMachineBuilder(
            self._synthetic.protocol, Operation
        )
        self._states: dict[str, DeclaredState] = {}
        self._transitions: list[DeclaredTransition] = []
        self._timeouts: dict[str, str] = {}
        self._timeouts_file = None if timeouts is None else os.fspath(timeouts)
        self._built = False

    # -- states ------------------------------------------------------------

    @overload
    def state(
        self, name: str, *, resources: Iterable[str] = (), children: Children = ()
    ) -> State[I, C, T]: ...
    @overload
    def state(
        self,
        name: str,
        factory: Callable[Concatenate[I, Operation[I, C, T], FP], D],
        *,
        resources: Iterable[str] = (),
        children: Children = (),
    ) -> DataState[I, C, D, FP, T]: ...
    def state(
        self,
        name: str,
        factory: Callable[Concatenate[I, Operation[I, C, T], FP], D] | None = None,
        *,
        resources: Iterable[str] = (),
        children: Children = (),
    ) -> State[I, C, T] | DataState[I, C, D, FP, T]:
        """
        A running state.  With ``factory``, a data state: the factory runs on
        every transition into it (with the input's arguments) and its result
        is passed to behaviours leaving it.  ``resources`` names what the state
        owns; ``children`` the machines of the child operations it runs
        (factories or names): both for diagrams and checks.
        """
        return cast(
            "State[I, C, T] | DataState[I, C, D, FP, T]",
            self._state(name, "running", factory, resources, children),
        )

    @overload
    def cleanup_state(
        self, name: str, *, resources: Iterable[str] = (), children: Children = ()
    ) -> State[I, C, T]: ...
    @overload
    def cleanup_state(
        self,
        name: str,
        factory: Callable[Concatenate[I, Operation[I, C, T], FP], D],
        *,
        resources: Iterable[str] = (),
        children: Children = (),
    ) -> DataState[I, C, D, FP, T]: ...
    def cleanup_state(
        self,
        name: str,
        factory: Callable[Concatenate[I, Operation[I, C, T], FP], D] | None = None,
        *,
        resources: Iterable[str] = (),
        children: Children = (),
    ) -> State[I, C, T] | DataState[I, C, D, FP, T]:
        """
        A state in which the operation is winding down.
        """
        return cast(
            "State[I, C, T] | DataState[I, C, D, FP, T]",
            self._state(name, "cleanup", factory, resources, children),
        )

    def terminal_state(self, name: str) -> State[I, C, T]:
        """
        A state that completes the operation.
        """
        return cast("State[I, C, T]", self._state(name, "terminal", None, (), ()))

    def _state(
        self,
        name: str,
        kind: StateKind,
        factory: Callable[..., Any] | None,
        resources: Iterable[str],
        children: Children,
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
        if isinstance(resources, str) or isinstance(children, str):
            raise DefinitionError(
                f"{self.name}: state {name!r}: resources= and children= take lists of names"
            )
        automat: Any
        if factory is None:
            automat = self._automat.state(name)
        else:
            refuse_async(self.name, f"data factory of state {name!r}", factory)
            automat = self._automat.state(name, wrap_factory(factory, name, kind))
        child_names = tuple(c if isinstance(c, str) else c.name for c in children)
        record = DeclaredState(name, kind, resources, automat, factory, child_names)
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
        sources: tuple[DeclaredState, ...],
        input: Callable[..., Any],
        target: DeclaredState | None,
        *,
        when: Callable[..., bool] | None = None,
        nodata: bool = False,
    ) -> Transition[Any, Any]:
        """
        Declare ``input`` from each of ``sources`` to ``target`` (``None``:
        a loop), guarded by ``when`` if given.
        """
        if self._built:
            raise DefinitionError(f"{self.name}: cannot add transitions after build()")
        if when is not None:
            if not callable(when):
                raise DefinitionError(f"{self.name}: when= must be a callable, not {when!r}")
            refuse_async(self.name, "guard", when)
        records = [self._declare(source, input, target, when, nodata) for source in sources]
        self._transitions.extend(records)
        return Transition(self, records)

    def _declare(
        self,
        source: DeclaredState,
        input: Callable[..., Any],
        target: DeclaredState | None,
        when: Callable[..., bool] | None,
        nodata: bool,
    ) -> DeclaredTransition:
        name = input.__name__
        into = source if target is None else target
        where = f"{self.name}: state {source.name!r}"
        if when is None and any(
            t.source is source and t.input == name and t.guard is None for t in self._transitions
        ):
            raise DefinitionError(f"{where} already has a transition upon {name!r}")
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
            if into.kind == "running":
                raise DefinitionError(
                    f"{self.name}: cancel in {source.name!r} must lead to a cleanup or "
                    f"terminal state, not to running state {into.name!r}"
                )
        if source.kind == "cleanup" and into.kind == "running":
            raise DefinitionError(
                f"{self.name}: cleanup state {source.name!r} cannot lead back to running "
                f"state {into.name!r} (upon {name!r}): a cancel ignored while winding "
                "down would be lost"
            )
        automat_input = input if when is None else self._synthetic.add(input, when)
        return DeclaredTransition(
            source,
            name,
            into,
            loop=target is None,
            guard=when,
            automat_input=automat_input,
            nodata=nodata and source.data,
        )

    # -- build -------------------------------------------------------------

    def build(self) -> OperationFactory[I, C, T]:
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
                + ", ".join(t.describe() for t in incomplete)
            )
        spec = self._spec()
        check_guards(spec)
        check_structure(spec)
        self._built = True
        try:
            automat = self._automat.build()
        except ValueError as e:
            raise DefinitionError(f"{self.name}: {e}") from None
        return OperationFactory(self, spec, automat, self._transitions)

    def _spec(self) -> MachineSpec:
        states = tuple(
            StateSpec(s.name, s.kind, s.resources, s.children) for s in self._states.values()
        )
        transitions = [
            TransitionSpec(
                t.source.name,
                t.input,
                t.target.name,
                t.output,
                timeout=self._timeouts.get(t.input),
                guard=None if t.guard is None else getattr(t.guard, "__name__", "guard"),
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
