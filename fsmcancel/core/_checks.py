"""
What ``build()`` refuses, checked on the machine's plain description.

fsmcancel's promises are structural: every running state handles
``cancel``, that transition leads out of the running states, every state can
finish, terminal states own nothing.  A machine that breaks one would fail
only on the rare path that reaches the gap, in production, so ``build()``
checks them all when the module is imported and names every offending state.

Everything here reads a `MachineSpec` (and the input Protocol), never the
builder's internals, so the checks cannot depend on how a machine was
declared.

Owns: nothing; pure functions of a ``MachineSpec``.  Must not touch: the
builder, Automat, running operations.
"""

from __future__ import annotations

from collections.abc import Iterable
from inspect import signature

from fsmcancel.core._errors import DefinitionError
from fsmcancel.core._spec import MachineSpec


def check_inputs(name: str, inputs: type) -> None:
    """
    The input Protocol has a ``cancel(reason) -> None`` input.
    """
    cancel = getattr(inputs, "cancel", None)
    if cancel is None:
        raise DefinitionError(
            f"{name}: {inputs.__qualname__} has no cancel input; inherit fsmcancel.Cancellable"
        )
    if signature(cancel).return_annotation not in (None, "None"):
        raise DefinitionError(f"{name}: {inputs.__qualname__}.cancel must be declared -> None")


def check_structure(spec: MachineSpec) -> None:
    """
    Refuse, naming the states: no terminal state; a running state without a
    ``cancel`` transition; a terminal state declaring resources; a state
    unreachable from the initial one; a state from which no terminal state
    can be reached.
    """
    name, states = spec.name, spec.states
    declared = [t for t in spec.transitions if not t.automatic]
    if not any(s.kind == "terminal" for s in states):
        raise DefinitionError(f"{name}: the machine has no terminal state")
    handles_cancel = {t.source for t in declared if t.is_cancel and t.guard is None}
    missing = [s.name for s in states if s.kind == "running" and s.name not in handles_cancel]
    if missing:
        raise DefinitionError(
            f"{name}: running states without a cancel transition: {', '.join(missing)}"
        )
    owning = [s.name for s in states if s.kind == "terminal" and (s.resources or s.children)]
    if owning:
        raise DefinitionError(f"{name}: terminal states cannot own resources: {', '.join(owning)}")
    forward: dict[str, set[str]] = {s.name: set() for s in states}
    backward: dict[str, set[str]] = {s.name: set() for s in states}
    for t in declared:
        forward[t.source].add(t.target)
        backward[t.target].add(t.source)
    reachable = _closure([spec.initial], forward)
    unreachable = [s.name for s in states if s.name not in reachable]
    if unreachable:
        raise DefinitionError(
            f"{name}: states unreachable from {spec.initial!r}: {', '.join(unreachable)}"
        )
    finishing = _closure([s.name for s in states if s.kind == "terminal"], backward)
    stuck = [s.name for s in states if s.name not in finishing]
    if stuck:
        raise DefinitionError(f"{name}: no terminal state can be reached from: {', '.join(stuck)}")


def _closure(start: Iterable[str], edges: dict[str, set[str]]) -> set[str]:
    seen = set(start)
    todo = list(seen)
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def check_guards(spec: MachineSpec) -> None:
    """
    ``cancel`` is accepted in every state: a guarded cancel needs a fallback
    (an unguarded cancel transition in the same state), or a cancel could
    find no guard holding and be refused.
    """
    guarded = {t.source for t in spec.transitions if t.is_cancel and t.guard is not None}
    fallback = {t.source for t in spec.transitions if t.is_cancel and t.guard is None}
    missing = sorted(guarded - fallback)
    if missing:
        raise DefinitionError(
            f"{spec.name}: guarded cancel transitions need an unguarded fallback, so that "
            f"cancel is always accepted; missing in: {', '.join(missing)}"
        )
