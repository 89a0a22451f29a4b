"""
Describe a plain Automat machine as a :class:`MachineSpec`.

Owns: reading the structure Automat records (``__automat_automaton__`` of a
``TypeMachine``, ``_automaton`` of a ``MethodicalMachine``; Automat offers
no public accessor, and its own ``asDigraph()`` reads the same).  Must not
touch: fsmcancel machines, which carry their own spec.

Automat records only states, inputs and outputs, in an unordered set, so
three things are decided here.  Title: the typed machine's input protocol
(``DoorInputs``), or the class that defines a ``MethodicalMachine``'s
inputs (``Lamp``), else their module -- never the attribute that holds the
machine, which as often as not is just called ``machine``.  Order: states
are listed breadth-first from the initial state (then any unreachable ones
by name), which follows the machine's own flow and is stable across runs.
Kind: Automat has no cleanup states and does not record terminal ones, so a
non-initial state with no transition out to another state is drawn as
terminal.

``.returns(value)`` transitions are drawn without an output: the
implementation Automat generates for them is named after ``repr(value)``,
which may contain a memory address and would make the diagram change from
run to run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from automat import MethodicalMachine, TypeMachine

from fsmcancel.core._spec import MachineSpec, StateSpec, TransitionSpec


def is_automat_machine(value: object) -> bool:
    return isinstance(value, (TypeMachine, MethodicalMachine))


def _method_name(thing: Any) -> str:
    return str(thing.method.__name__)


def spec_from_automat(machine: object, name: str | None = None) -> MachineSpec:
    """
    The spec of an ``automat.TypeMachine`` or ``automat.MethodicalMachine``.

    ``name`` defaults to the typed machine's input protocol name, or the
    class (else module) that defines a ``MethodicalMachine``'s inputs.
    """
    state_name: Callable[[Any], str]
    input_name: Callable[[Any], str]
    output_name: Callable[[Any], str]
    if isinstance(machine, TypeMachine):
        automaton: Any = machine.__automat_automaton__
        state_name, input_name, output_name = _typed_name, str, _typed_name
        default = machine.__automat_type__.__name__.removeprefix("Typed<").removesuffix(">")
    elif isinstance(machine, MethodicalMachine):
        automaton = machine._automaton
        state_name = input_name = output_name = _method_name
        default = _owner(automaton.inputAlphabet())
    else:
        raise TypeError(f"not an Automat machine: {machine!r}")
    transitions = [
        TransitionSpec(
            source=state_name(old),
            input=input_name(symbol),
            target=state_name(new),
            output=_join(output_name(output) for output in outputs),
        )
        for old, symbol, new, outputs in automaton.allTransitions()
    ]
    initial = state_name(automaton.initialState)
    return _ordered(name or default, initial, transitions)


def _owner(inputs: Iterable[Any]) -> str:
    """
    Where a ``MethodicalMachine``'s input methods are defined: ``Lamp`` for
    ``Lamp.flip``, the module for a module-level function.
    """
    for symbol in sorted(inputs, key=_method_name):
        owner, _, _ = symbol.method.__qualname__.rpartition(".")
        return str(owner.replace(".<locals>", "") or symbol.method.__module__)
    return "MethodicalMachine"


def _typed_name(thing: Any) -> str:
    return str(thing.name)


def _join(names: Iterable[str]) -> str | None:
    kept = [name for name in names if not name.startswith("returns(")]
    return ", ".join(kept) or None


def _ordered(name: str, initial: str, transitions: list[TransitionSpec]) -> MachineSpec:
    transitions.sort(key=lambda t: (t.source, t.input, t.target))
    outgoing: dict[str, list[TransitionSpec]] = {}
    for transition in transitions:
        outgoing.setdefault(transition.source, []).append(transition)
    order = [initial]
    queue = deque(order)
    while queue:
        for transition in outgoing.get(queue.popleft(), []):
            if transition.target not in order:
                order.append(transition.target)
                queue.append(transition.target)
    every = {t.source for t in transitions} | {t.target for t in transitions}
    order += sorted(every - set(order))
    rank = {state: index for index, state in enumerate(order)}
    states = tuple(
        StateSpec(state, "terminal" if _is_terminal(state, initial, outgoing) else "running")
        for state in order
    )
    ranked = sorted(transitions, key=lambda t: (rank[t.source], t.input, t.target))
    return MachineSpec(name, initial, states, tuple(ranked))


def _is_terminal(state: str, initial: str, outgoing: dict[str, list[TransitionSpec]]) -> bool:
    return state != initial and all(t.target == state for t in outgoing.get(state, []))
