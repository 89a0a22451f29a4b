"""
What runs on a transition: the function Automat calls, around the user's
behaviour.

Automat has no exit hooks, and fsmcancel must know, at every transition,
which state is being left and which entered, to release what the old state
owned.  A tracer on every transition would cost a call per input; instead,
each behaviour is wrapped when it is declared, and the wrapper knows
statically which kind of transition it belongs to:

- a *loop* (``.loop()``) stays in its state: resources are kept, the data of
  a data state is kept;
- a *move* (``.to(other)``) enters another state: the old state's resources
  are released after the behaviour, and leaving a data state for a plain one
  drops the old data, which Automat would otherwise keep alive;
- ``.to(itself)`` is a move too: leave and re-enter (resources released,
  data rebuilt), which Automat alone would not do;
- entering a data state is announced by its data factory, which Automat runs
  before the behaviour.

Behaviours receive ``(inputs, op, [data], *args)``: the operation's inputs,
the ``Operation``, the data of the data state being left, and the input's
arguments.  They run synchronously inside the transition, so an ``async
def`` behaviour is refused when it is declared: start the coroutine with
``Deferred.fromCoroutine`` and ``op.watch`` it instead.

Owns: the wrappers Automat calls.  Must not touch: the ledger directly;
it announces state changes through ``Operation._enter``/``_loop``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from fsmcancel.core._errors import DefinitionError
from fsmcancel.core._spec import StateKind

if TYPE_CHECKING:
    from fsmcancel.core._builder import OperationBuilder
    from fsmcancel.core._operation import Operation

P = ParamSpec("P")
R = TypeVar("R")

#: What entering a state of each kind means, as the wrappers pass it to
#: ``Operation._enter`` (an int: this runs on every transition).
ENDING: dict[StateKind, int] = {"running": 0, "cleanup": 1, "terminal": 2}


@dataclass
class DeclaredState:
    """
    A state as declared, with the Automat state that implements it and, for
    a data state, the user's data factory.
    """

    name: str
    kind: StateKind
    resources: tuple[str, ...]
    automat: Any
    factory: Callable[..., Any] | None
    children: tuple[str, ...] = ()

    @property
    def data(self) -> bool:
        return self.factory is not None


@dataclass
class DeclaredTransition:
    """
    A transition as declared; ``done`` once it has a behaviour.

    ``loop`` distinguishes ``.loop()`` (stay) from ``.to(itself)`` (leave
    and re-enter).  ``guard`` selects it among several on the same input
    from the same state; Automat knows it by ``automat_input``, a synthetic
    input of its own (see ``_guards.py``).  ``nodata`` means the behaviour
    does not take the data of its (data) source state.
    """

    source: DeclaredState
    input: str
    target: DeclaredState
    loop: bool = False
    guard: Callable[..., bool] | None = None
    automat_input: Callable[..., Any] | None = None
    nodata: bool = False
    output: str | None = None
    done: bool = False

    def describe(self) -> str:
        guard = f" [{self.guard.__name__}]" if self.guard is not None else ""
        return f"{self.source.name} --{self.input}{guard}--> {self.target.name}"


def refuse_async(owner: str, what: str, fn: Callable[..., Any]) -> None:
    """
    A coroutine function would return a coroutine nobody awaits, and the
    operation would end without an outcome: say so where it is declared.
    """
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise DefinitionError(
            f"{owner}: {what} {getattr(fn, '__qualname__', fn)!r} is async def; behaviours "
            "run synchronously inside a transition: start the coroutine with "
            "Deferred.fromCoroutine() and op.watch() it"
        )


class Transition(Generic[P, R]):
    """
    A declared transition (from one state or several) waiting for its
    behaviour: decorate a function with it, or call ``returns(value)`` for a
    transition with no behaviour.
    """

    def __init__(self, builder: OperationBuilder[Any, Any, Any], records: list[DeclaredTransition]):
        self._builder = builder
        self._records = records

    def __call__(self, behaviour: Callable[P, R]) -> Callable[P, R]:
        refuse_async(self._builder.name, "behaviour", behaviour)
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
        for record in self._records:
            if record.done:
                raise DefinitionError(
                    f"{self._builder.name}: transition {record.describe()} already has a behaviour"
                )
        for record in self._records:
            record.done = True
            record.output = output
            source, target = record.source, record.target
            wrapped = wrap_behaviour(behaviour, record)
            if source.data and record.nodata:
                upon = source.automat.upon(record.automat_input, nodata=True)
            else:
                upon = source.automat.upon(record.automat_input)
            # Automat's own ``.to(itself)`` neither leaves nor rebuilds data,
            # so both stay-kinds are Automat loops; the wrapper re-enters.
            registrar = upon.loop() if source is target else upon.to(target.automat)
            registrar(wrapped)


def wrap_behaviour(behaviour: Callable[..., Any], record: DeclaredTransition) -> Callable[..., Any]:
    """
    The function Automat actually calls for one transition.

    Which bookkeeping a transition needs is known when it is declared, so
    each variant does only its own:

    - a loop only traces itself (when transitions are traced);
    - a move announces the state it enters, unless the target is another
      data state, whose factory (run by Automat first) already did; leaving a
      data state for a plain one drops the old data;
    - ``.to(itself)`` announces the re-entry and, for a data state, rebuilds
      its data, as on any entry.

    Automat checks a data state's data against the annotation of the third
    parameter of the function it calls, hence the explicit ``data: object``.
    """
    source, target = record.source, record.target
    new, ending = target.name, ENDING[target.kind]
    with_data = source.data and not record.nodata
    if record.loop:
        if with_data:

            def stay_with_data(
                _machine: Any, op: Operation[Any, Any], data: object, *args: Any, **kw: Any
            ) -> Any:
                if op._trace:
                    op._loop()
                return behaviour(op.inputs, op, data, *args, **kw)

            return stay_with_data

        def stay(_machine: Any, op: Operation[Any, Any], *args: Any, **kw: Any) -> Any:
            if op._trace:
                op._loop()
            return behaviour(op.inputs, op, *args, **kw)

        return stay
    announce = not target.data or source is target
    rebuild = target.factory if source is target else None
    drops = source.data and not target.data
    if with_data:

        def from_data(
            machine: Any, op: Operation[Any, Any], data: object, *args: Any, **kw: Any
        ) -> Any:
            if announce:
                op._enter(new, ending)
            if rebuild is not None:
                machine.__automat_data__ = rebuild(op.inputs, op, *args, **kw)
            try:
                return behaviour(op.inputs, op, data, *args, **kw)
            finally:
                if drops:
                    machine.__automat_data__ = None

        return from_data
    if rebuild is not None or drops:
        # From a data state whose data the behaviour does not take.

        def from_data_state(machine: Any, op: Operation[Any, Any], *args: Any, **kw: Any) -> Any:
            if announce:
                op._enter(new, ending)
            if rebuild is not None:
                machine.__automat_data__ = rebuild(op.inputs, op, *args, **kw)
            try:
                return behaviour(op.inputs, op, *args, **kw)
            finally:
                if drops:
                    machine.__automat_data__ = None

        return from_data_state
    if announce:

        def move(_machine: Any, op: Operation[Any, Any], *args: Any, **kw: Any) -> Any:
            op._enter(new, ending)
            return behaviour(op.inputs, op, *args, **kw)

        return move

    def into_data(_machine: Any, op: Operation[Any, Any], *args: Any, **kw: Any) -> Any:
        return behaviour(op.inputs, op, *args, **kw)

    return into_data


def wrap_factory(factory: Callable[..., Any], name: str, kind: StateKind) -> Callable[..., Any]:
    """
    The data factory Automat runs on entering data state ``name`` (before the
    transition's behaviour): it announces the entry, then builds the data.
    """
    ending = ENDING[kind]

    def enter_data_state(_machine: Any, op: Operation[Any, Any], *args: Any, **kw: Any) -> Any:
        op._enter(name, ending)
        return factory(op.inputs, op, *args, **kw)

    enter_data_state.__name__ = getattr(factory, "__name__", "factory")
    return enter_data_state
