"""
Defining an operation: Automat's typed builder, plus what cancellation needs.

You write what you would write for ``automat.TypeMachineBuilder``: a Protocol
of inputs, states, and ``state.upon(Inputs.x).to(other)`` transitions whose
behaviours are plain functions.  Underneath, a real ``TypeMachineBuilder``
builds the machine; fsmcancel records the structure as it is declared and
wraps each behaviour so that it knows, statically, which state it leaves and
enters.  That is how a state's resources are released when it is left
(Automat has no exit hooks) without a tracer on every transition.

Behaviours receive ``(inputs, op, [data], *args)``: the operation's inputs,
the ``Operation`` (resources, outcome, clock, and the user's ``op.core``), the
data of the data state being left, and the input's arguments.

Three kinds of state:

- ``state()``: a running state.  It must define ``cancel``, and that
  transition must go to a cleanup or terminal state.  The first one declared
  is the initial state.
- ``cleanup_state()``: the operation is winding down (closing a connection,
  waiting for a child).  ``cancel`` is fsmcancel's business there: the first
  request is a no-op, a further one forces completion.
- ``terminal_state()``: reaching one completes the operation once every
  release has finished.  It owns nothing and has no transitions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from inspect import signature
from typing import Any, Generic, Literal, Protocol, TypeVar, cast, overload

from automat import TypeMachineBuilder

from fsmcancel._errors import DefinitionError
from fsmcancel._operation import Operation, ReactorTime
from fsmcancel._registry import Registry
from fsmcancel._spec import MachineSpec, StateKind, StateSpec, TransitionSpec

if True:  # typing-only names, kept together for readability
    from typing import Concatenate, ParamSpec

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


@dataclass
class _StateRecord:
    name: str
    kind: StateKind
    resources: tuple[str, ...]
    automat: Any
    data: bool


@dataclass
class _TransitionRecord:
    source: _StateRecord
    input: str
    target: _StateRecord
    output: str | None = None
    done: bool = False


class Transition(Generic[P, R]):
    """
    A declared transition waiting for its behaviour: decorate a function with
    it, or call ``returns(value)`` for a transition with no behaviour.
    """

    def __init__(
        self,
        builder: OperationBuilder[Any, Any],
        record: _TransitionRecord,
        input: Callable[..., Any],
    ) -> None:
        self._builder = builder
        self._record = record
        self._input = input

    def __call__(self, behaviour: Callable[P, R]) -> Callable[P, R]:
        self._register(behaviour, behaviour.__name__)
        return behaviour

    def returns(self, value: R) -> None:
        """
        No behaviour: the input just moves the machine and returns ``value``.
        """

        def constant(*args: object, **kwargs: object) -> R:
            return value

        self._register(constant, None)

    def _register(self, behaviour: Callable[..., Any], output: str | None) -> None:
        record = self._record
        if record.done:
            raise DefinitionError(
                f"{self._builder.name}: transition {record.source.name} --{record.input}--> "
                f"{record.target.name} already has a behaviour"
            )
        record.done = True
        record.output = output
        source, target = record.source, record.target
        automat_target = target.automat
        wrapped = _wrap(behaviour, source, target)
        upon = source.automat.upon(self._input)
        registrar = upon.loop() if source is target else upon.to(automat_target)
        registrar(wrapped)


def _wrap(
    behaviour: Callable[..., Any], source: _StateRecord, target: _StateRecord
) -> Callable[..., Any]:
    """
    The function Automat actually calls for one transition.

    Which bookkeeping a transition needs is known when it is declared, so
    each variant does only its own: a loop does nothing extra; a move tells
    the operation which state it enters (unless the target's data factory
    already did); leaving a data state for a plain one drops the old data,
    which Automat would otherwise keep alive.

    Automat checks a data state's data against the annotation of the third
    parameter of the function it calls, hence the explicit ``data: object``.
    """
    new, terminal = target.name, target.kind == "terminal"
    enters = source is not target and not target.data
    if source.data:
        drops = enters

        def from_data(
            machine: Any, op: Operation[Any, Any], data: object, *args: Any, **kw: Any
        ) -> Any:
            if enters:
                op._enter(new, terminal)
            elif op._trace and source is target:
                op._loop()
            try:
                return behaviour(op.inputs, op, data, *args, **kw)
            finally:
                if drops:
                    machine.__automat_data__ = None

        return from_data
    if enters:

        def move(_machine: Any, op: Operation[Any, Any], *args: Any, **kw: Any) -> Any:
            op._enter(new, terminal)
            return behaviour(op.inputs, op, *args, **kw)

        return move

    def stay(_machine: Any, op: Operation[Any, Any], *args: Any, **kw: Any) -> Any:
        if op._trace:
            op._loop()
        return behaviour(op.inputs, op, *args, **kw)

    return stay


def _wrap_factory(factory: Callable[..., Any], name: str, terminal: bool) -> Callable[..., Any]:
    def enter_data_state(_machine: Any, op: Operation[Any, Any], *args: Any, **kw: Any) -> Any:
        op._enter(name, terminal)
        return factory(op.inputs, op, *args, **kw)

    enter_data_state.__name__ = getattr(factory, "__name__", "factory")
    return enter_data_state


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
        return self._state._builder._transition(record, self._input, record)


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
        return self._state._builder._transition(record, self._input, record)


@dataclass(frozen=True, eq=False)
class State(Generic[I, C]):
    """
    A state without data (see ``OperationBuilder.state``).
    """

    _builder: OperationBuilder[I, C] = field(repr=False)
    _record: _StateRecord

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
    _record: _StateRecord

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
    """

    def __init__(
        self,
        inputs: Callable[[], I],
        core: type[C],
        *,
        name: str,
        unexpected: Literal["raise", "log"] = "raise",
        timeouts: str | os.PathLike[str] | None = None,
    ) -> None:
        if unexpected not in ("raise", "log"):
            raise DefinitionError(
                f"{name}: unexpected= must be 'raise' or 'log', not {unexpected!r}"
            )
        self.name = name
        self.unexpected = unexpected
        self._inputs: Any = inputs  # a Protocol class (typed as Automat does)
        self._core = core
        self._automat: TypeMachineBuilder[Any, Any] = TypeMachineBuilder(inputs, Operation)
        self._states: dict[str, _StateRecord] = {}
        self._transitions: list[_TransitionRecord] = []
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
            automat = self._automat.state(name, _wrap_factory(factory, name, kind == "terminal"))
        record = _StateRecord(name, kind, resources, automat, factory is not None)
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
        self, source: _StateRecord, input: Callable[..., Any], target: _StateRecord
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
                    "fsmcancel handles it there (a first cancel is a no-op, a further one forces)"
                )
            if target.kind == "running":
                raise DefinitionError(
                    f"{self.name}: cancel in {source.name!r} must lead to a cleanup or "
                    f"terminal state, not to running state {target.name!r}"
                )
        record = _TransitionRecord(source, name, target)
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
        self._check()
        self._built = True
        try:
            automat = self._automat.build()
        except ValueError as e:
            raise DefinitionError(f"{self.name}: {e}") from None
        _index_transitions(automat)
        return OperationFactory(self, automat)

    def _check(self) -> None:
        cancel = getattr(self._inputs, "cancel", None)
        if cancel is None:
            raise DefinitionError(
                f"{self.name}: {self._inputs.__qualname__} has no cancel input; inherit "
                "fsmcancel.Cancellable"
            )
        returns = signature(cancel).return_annotation
        if returns not in (None, "None"):
            raise DefinitionError(
                f"{self.name}: {self._inputs.__qualname__}.cancel must be declared -> None"
            )
        if not self._states:
            raise DefinitionError(f"{self.name}: the machine has no states")
        states = list(self._states.values())
        incomplete = [t for t in self._transitions if not t.done]
        if incomplete:
            raise DefinitionError(
                f"{self.name}: transitions without a behaviour or .returns(): "
                + ", ".join(f"{t.source.name} --{t.input}--> {t.target.name}" for t in incomplete)
            )
        if not any(s.kind == "terminal" for s in states):
            raise DefinitionError(f"{self.name}: the machine has no terminal state")
        handles_cancel = {t.source.name for t in self._transitions if t.input == "cancel"}
        missing = [s.name for s in states if s.kind == "running" and s.name not in handles_cancel]
        if missing:
            raise DefinitionError(
                f"{self.name}: running states without a cancel transition: {', '.join(missing)}"
            )
        owning = [s.name for s in states if s.kind == "terminal" and s.resources]
        if owning:
            raise DefinitionError(
                f"{self.name}: terminal states cannot own resources: {', '.join(owning)}"
            )
        forward: dict[str, set[str]] = {s.name: set() for s in states}
        backward: dict[str, set[str]] = {s.name: set() for s in states}
        for t in self._transitions:
            forward[t.source.name].add(t.target.name)
            backward[t.target.name].add(t.source.name)
        initial = states[0].name
        reachable = _closure([initial], forward)
        unreachable = [s.name for s in states if s.name not in reachable]
        if unreachable:
            raise DefinitionError(
                f"{self.name}: states unreachable from {initial!r}: {', '.join(unreachable)}"
            )
        finishing = _closure([s.name for s in states if s.kind == "terminal"], backward)
        stuck = [s.name for s in states if s.name not in finishing]
        if stuck:
            raise DefinitionError(
                f"{self.name}: no terminal state can be reached from: {', '.join(stuck)}"
            )

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


def _index_transitions(machine: Any) -> None:
    """
    Make Automat's dispatch a dictionary lookup.

    Automat finds a transition by scanning every transition of the machine
    (``Automaton.outputForInput``), so a transition costs more the bigger the
    machine; in a dozen-transition machine the scan is most of the cost.  The
    automaton is built for this factory alone, so we give it an index with
    the same answers, including ``NoTransition`` for a missing one.  Should a
    future Automat change shape, we keep its own lookup.
    """
    from automat import NoTransition

    automaton = getattr(machine, "__automat_automaton__", None)
    if automaton is None or not hasattr(automaton, "outputForInput"):
        return
    table = {
        (old, symbol): (new, tuple(outputs))
        for old, symbol, new, outputs in automaton.allTransitions()
    }

    def outputForInput(state: Any, symbol: str) -> tuple[Any, tuple[Any, ...]]:
        try:
            return table[state, symbol]
        except KeyError:
            raise NoTransition(state=state, symbol=symbol) from None

    automaton.outputForInput = outputForInput


def _closure(start: Iterable[str], edges: dict[str, set[str]]) -> set[str]:
    seen = set(start)
    todo = list(seen)
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


class _InputsBase:
    __slots__ = ("_op",)

    def __init__(self, op: Operation[Any, Any]) -> None:
        self._op = op

    def __repr__(self) -> str:
        return f"<inputs of {self._op.name}>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        inputs = ", ".join(sorted(n for n in dir(type(self)) if not n.startswith("_")))
        raise AttributeError(f"{self._op.name} has no input {name!r}; its inputs are: {inputs}")


def _input_method(
    name: str, automat_method: Callable[..., Any], declared: Callable[..., Any]
) -> Callable[..., Any]:
    """
    The method users call for one input.

    The common case (not re-entrant, not finishing) is inlined here because
    it runs on every transition; everything else goes to ``Operation._feed``.

    Arguments are checked against the Protocol's signature before anything
    runs: a wrong call is the caller's mistake, raised to the caller, and
    must not become a failure of the behaviour (which would fail the whole
    operation).  Counting positional arguments is enough on the hot path;
    the full ``Signature.bind`` runs only when that count is off or keyword
    arguments are used.
    """
    sig = signature(declared)
    params = list(sig.parameters.values())[1:]  # without self
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    low = sum(1 for p in positional if p.default is p.empty)
    high = len(positional)
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        high = 1 << 30

    def check(op: Operation[Any, Any], args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        try:
            sig.bind(None, *args, **kw)
        except TypeError as e:
            raise TypeError(f"{op.name}: input {name!r} in state {op.state!r}: {e}") from None

    def feed(self: _InputsBase, *args: Any, **kw: Any) -> Any:
        op = self._op
        if kw or not low <= len(args) <= high:
            check(op, args, kw)
        if op._busy or op._finishing:
            return op._feed(name, automat_method, args, kw)
        op._busy = True
        op._input = name
        try:
            result = automat_method(op._machine, *args, **kw)
        except Exception:
            return op._failed_dispatch(name)
        if op._leaving is not None or op._queue:
            op._settle_transition()
        op._busy = False
        if op._finishing:
            op._maybe_finish()
        return result

    feed.__name__ = feed.__qualname__ = name
    return feed


def _cancel_method(self: _InputsBase, reason: str | None = None) -> None:
    self._op._request_cancel(reason)


class OperationFactory(Generic[I, C]):
    """
    What ``OperationBuilder.build()`` returns: call it to start an operation.

    ``spec`` describes the machine (for diagrams and the testing helpers).
    """

    def __init__(self, builder: OperationBuilder[I, C], automat: Any) -> None:
        self.name = builder.name
        self.unexpected = builder.unexpected
        self.spec: MachineSpec = builder._spec()
        self._automat = automat
        self._kinds: dict[str, StateKind] = {s.name: s.kind for s in self.spec.states}
        # Automat's generated class implements every method of the protocol
        # (an input no state accepts raises NoTransition, like any other).
        runtime = type(automat(None))
        methods: dict[str, Any] = {"__slots__": ()}
        self._returns_none: dict[str, bool] = {}
        for name, implementation in vars(runtime).items():
            if name.startswith("__") or not callable(implementation):
                continue
            protocol_method = getattr(builder._inputs, name)
            self._returns_none[name] = signature(protocol_method).return_annotation in (
                None,
                "None",
            )
            if name == "cancel":
                methods[name] = _cancel_method
                self._cancel_method: Callable[..., Any] = implementation
            else:
                methods[name] = _input_method(name, implementation, protocol_method)
        self._inputs_type = type(f"{builder._inputs.__name__}Inputs", (_InputsBase,), methods)

    def __call__(
        self,
        core: C,
        *,
        clock: ReactorTime | None = None,
        registry: Registry | None = None,
    ) -> Operation[I, C]:
        """
        Start an operation in the initial state.

        ``clock`` defaults to the global reactor; ``registry``, if given,
        lists the operation (weakly) until it completes.
        """
        if clock is None:
            from twisted.internet import reactor

            clock = cast(ReactorTime, reactor)
        return Operation(self, core, clock, registry)

    def __repr__(self) -> str:
        return f"<OperationFactory {self.name}>"
