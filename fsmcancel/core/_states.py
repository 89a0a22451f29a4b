"""
The handles a machine definition is written with: states, and ``upon``.

``builder.state(...)`` returns a `State` (or a `DataState`, whose data is
built on entry and passed to the behaviours that leave it, as in Automat).
``state.upon(Inputs.x)`` starts a transition; ``.to(other)`` or ``.loop()``
finishes declaring it and returns the decorator for its behaviour:

- ``.to(other, when=guard)`` makes it one of several transitions on the same
  input from the same state, chosen by a condition: guards are tried in
  declaration order, and an unguarded transition on the same input is the
  fallback.  A guard takes what the behaviour takes and returns a bool; it
  decides, it does not act (no resources, no inputs).
- ``(a | b | c).upon(Inputs.x)`` declares the same transition from several
  states at once (their data, if any, is not passed to the behaviour).

Everything here is typed as in Automat's ``_typed.py``: a behaviour's
parameters after ``(inputs, op[, data])`` must match the input's, and ``op``
is an ``Operation[I, C, T]`` whose ``succeed`` takes the outcome type ``T``.

Owns: nothing beyond the records it hands to the builder.  Must not
touch: Automat (the builder registers transitions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec

from typing_extensions import TypeVar

from fsmcancel.core._operation import Operation
from fsmcancel.core._transitions import DeclaredState, Transition

if TYPE_CHECKING:
    from fsmcancel.core._builder import OperationBuilder

I = TypeVar("I")  # noqa: E741
C = TypeVar("C")
T = TypeVar("T", default=Any)
D = TypeVar("D")
R = TypeVar("R")
P = ParamSpec("P")
FP = ParamSpec("FP")


class Upon(Generic[I, C, P, R, T]):
    """
    ``state.upon(input)`` from a state whose behaviours get no data.
    """

    def __init__(
        self,
        builder: OperationBuilder[I, C, T],
        sources: tuple[DeclaredState, ...],
        input: Callable[..., Any],
    ) -> None:
        self._builder = builder
        self._sources = sources
        self._input = input

    def to(
        self,
        target: State[I, C, T] | DataState[I, C, Any, P, T],
        *,
        when: Callable[Concatenate[I, Operation[I, C, T], P], bool] | None = None,
    ) -> Transition[Concatenate[I, Operation[I, C, T], P], R]:
        """
        Declare a transition to ``target`` (to the state itself: leave and
        re-enter it), taken only ``when`` the guard holds, if one is given.
        """
        return self._builder._transition(
            self._sources, self._input, target._record, when=when, nodata=True
        )

    def loop(
        self, *, when: Callable[Concatenate[I, Operation[I, C, T], P], bool] | None = None
    ) -> Transition[Concatenate[I, Operation[I, C, T], P], R]:
        """
        Declare a transition that stays in the state (its resources stay).
        """
        return self._builder._transition(self._sources, self._input, None, when=when, nodata=True)


class DataUpon(Generic[I, C, D, P, R, T]):
    """
    ``state.upon(input)`` from a data state: behaviours get its data.
    """

    def __init__(
        self, builder: OperationBuilder[I, C, T], source: DeclaredState, input: Callable[..., Any]
    ) -> None:
        self._builder = builder
        self._source = source
        self._input = input

    def to(
        self,
        target: State[I, C, T] | DataState[I, C, Any, P, T],
        *,
        when: Callable[Concatenate[I, Operation[I, C, T], D, P], bool] | None = None,
    ) -> Transition[Concatenate[I, Operation[I, C, T], D, P], R]:
        """
        Declare a transition to ``target`` (see `Upon.to`).
        """
        return self._builder._transition((self._source,), self._input, target._record, when=when)

    def loop(
        self, *, when: Callable[Concatenate[I, Operation[I, C, T], D, P], bool] | None = None
    ) -> Transition[Concatenate[I, Operation[I, C, T], D, P], R]:
        """
        Declare a transition that stays in the state (its resources and data
        stay).
        """
        return self._builder._transition((self._source,), self._input, None, when=when)


@dataclass(frozen=True, eq=False)
class State(Generic[I, C, T]):
    """
    A state without data (see ``OperationBuilder.state``).
    """

    _builder: OperationBuilder[I, C, T] = field(repr=False)
    _record: DeclaredState

    @property
    def name(self) -> str:
        return self._record.name

    def upon(self, input: Callable[Concatenate[I, P], R]) -> Upon[I, C, P, R, T]:
        return Upon(self._builder, (self._record,), self._builder._check_input(input))

    def __or__(
        self, other: State[I, C, T] | DataState[I, C, Any, Any, T] | States[I, C, T]
    ) -> States[I, C, T]:
        return States(self._builder, (self._record, *_records(other)))


@dataclass(frozen=True, eq=False)
class DataState(Generic[I, C, D, FP, T]):
    """
    A state whose data is built by a factory on entry and passed to the
    behaviours that leave it, as in Automat.
    """

    _builder: OperationBuilder[I, C, T] = field(repr=False)
    _record: DeclaredState

    @property
    def name(self) -> str:
        return self._record.name

    def upon(self, input: Callable[Concatenate[I, P], R]) -> DataUpon[I, C, D, P, R, T]:
        return DataUpon(self._builder, self._record, self._builder._check_input(input))

    def __or__(
        self, other: State[I, C, T] | DataState[I, C, Any, Any, T] | States[I, C, T]
    ) -> States[I, C, T]:
        return States(self._builder, (self._record, *_records(other)))


@dataclass(frozen=True, eq=False)
class States(Generic[I, C, T]):
    """
    Several states, ``a | b | c``: one declaration covers the same
    transition from each of them.
    """

    _builder: OperationBuilder[I, C, T] = field(repr=False)
    _records: tuple[DeclaredState, ...]

    def upon(self, input: Callable[Concatenate[I, P], R]) -> Upon[I, C, P, R, T]:
        return Upon(self._builder, self._records, self._builder._check_input(input))

    def __or__(
        self, other: State[I, C, T] | DataState[I, C, Any, Any, T] | States[I, C, T]
    ) -> States[I, C, T]:
        return States(self._builder, (*self._records, *_records(other)))


def _records(
    states: State[Any, Any, Any] | DataState[Any, Any, Any, Any, Any] | States[Any, Any, Any],
) -> tuple[DeclaredState, ...]:
    if isinstance(states, States):
        return states._records
    return (states._record,)
