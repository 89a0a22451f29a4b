"""
Guarded transitions: several transitions on one input from one state, the
first whose condition holds being taken.

Automat gives each (state, input) one transition with a fixed target, and a
behaviour cannot choose the next state.  Without guards, a machine that must
branch feeds itself made-up inputs (``enough``, ``all_fetched``), which a
diagram then shows as outside events.  With them, the branch is part of the
transition, and diagrams draw it as ``input [guard]``.

How it runs on Automat: each guarded alternative is registered under a
synthetic input of its own (``fetched[have_all]``), a copy of the real input
method added to a subclass of the input Protocol that only Automat sees.
The input users call asks the guards of the current state in declaration
order and dispatches the chosen alternative's synthetic input; if none holds,
the unguarded transition on the real input (the fallback) is taken, and if
there is none, that is ``UnexpectedInput``, naming the guards tried.

A guard takes what the behaviour takes (``inputs, op[, data], *args``) and
returns a bool.  It decides; it must not act (acquire resources, feed
inputs).  A guard that raises fails the operation, as a behaviour would.

Owns: the synthetic inputs and the per-state tables of alternatives.
Must not touch: the state an operation is in (Automat moves it).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from automat import NoTransition


class NoGuardHeld(NoTransition[Any, Any]):
    """
    No guard held for an input in a state that has no fallback for it.
    """

    def __init__(self, state: Any, symbol: str, guards: tuple[str, ...]) -> None:
        super().__init__(state=state, symbol=symbol)
        self.guards = guards

    @property
    def detail(self) -> str:
        return f"no guard held: {', '.join(self.guards)}; no fallback"


class SyntheticInputs:
    """
    The subclass of the input Protocol that Automat builds from, and the
    synthetic inputs added to it, one per (input, guard).
    """

    def __init__(self, protocol: type) -> None:
        self.protocol: type = type(f"{protocol.__name__}WithGuards", (protocol,), {})
        self._names: dict[tuple[str, Callable[..., bool]], str] = {}

    def add(self, input: Callable[..., Any], guard: Callable[..., bool]) -> Callable[..., Any]:
        """
        The synthetic input for ``guard`` on ``input`` (created once).
        """
        key = (input.__name__, guard)
        name = self._names.get(key)
        if name is None:
            base = f"{input.__name__}[{getattr(guard, '__name__', 'guard')}]"
            name, n = base, 1
            while hasattr(self.protocol, name):
                n += 1
                name = f"{base}#{n}"
            self._names[key] = name
            setattr(self.protocol, name, _renamed(input, name))
        method: Callable[..., Any] = getattr(self.protocol, name)
        return method

    def is_synthetic(self, name: str) -> bool:
        return name in self._names.values()


def _renamed(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """
    A copy of the input method under another name, with the same signature
    and globals (Automat reads both).
    """
    code = getattr(fn, "__code__", None)
    if code is None:  # pragma: no cover - protocol methods are functions
        raise TypeError(f"{fn!r} is not a function")
    copy = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = getattr(fn, "__kwdefaults__", None)
    copy.__annotations__ = dict(getattr(fn, "__annotations__", {}))
    copy.__qualname__ = f"{getattr(fn, '__qualname__', name).rpartition('.')[0]}.{name}"
    return copy


@dataclass
class Alternatives:
    """
    The guarded transitions of one input in one state, in declaration order:
    ``(guard, Automat method of its synthetic input, whether the guard takes
    the state's data)``; ``fallback`` when an unguarded one exists.
    """

    automat_state: Any
    guarded: list[tuple[Callable[..., bool], Callable[..., Any], bool]] = field(
        default_factory=list
    )
    fallback: bool = False

    def names(self) -> tuple[str, ...]:
        return tuple(getattr(g, "__name__", "guard") for g, _, _ in self.guarded)


def chooser(
    name: str, plain: Callable[..., Any], table: dict[str, Alternatives]
) -> Callable[..., Any]:
    """
    The Automat-level method for an input that has guards in some state:
    ask them, then dispatch the chosen transition (or the plain input).
    """

    def choose(machine: Any, *args: Any, **kw: Any) -> Any:
        op = machine.__automat_core__
        alternatives = table.get(op._state)
        if alternatives is None:
            return plain(machine, *args, **kw)
        inputs = op.inputs
        for guard, method, with_data in alternatives.guarded:
            if with_data:
                held = guard(inputs, op, machine.__automat_data__, *args, **kw)
            else:
                held = guard(inputs, op, *args, **kw)
            if held:
                return method(machine, *args, **kw)
        if alternatives.fallback:
            return plain(machine, *args, **kw)
        raise NoGuardHeld(alternatives.automat_state, name, alternatives.names())

    choose.__name__ = name
    return choose
