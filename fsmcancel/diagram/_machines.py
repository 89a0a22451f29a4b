"""
What can be drawn, and its :class:`MachineSpec`.

Owns: recognising the things ``render`` accepts -- a ``MachineSpec``,
anything with a ``.spec`` (an fsmcancel machine factory or a live
operation), a plain Automat machine -- and a live operation's current
state.  Must not touch: how Automat machines are read (``_from_automat``)
or where machines are looked for (``_discover``).

Recognition is by shape (a ``.spec`` that is a ``MachineSpec``), not by
class: the diagram code imports nothing from fsmcancel's core but the spec,
so the core can be reorganised without breaking diagrams.
"""

from __future__ import annotations

from fsmcancel.core._spec import MachineSpec
from fsmcancel.diagram._from_automat import is_automat_machine, spec_from_automat


def spec_attribute(value: object) -> MachineSpec | None:
    """
    ``value.spec`` if it is a :class:`MachineSpec`: fsmcancel machine
    factories and live operations both carry one.
    """
    try:
        spec = getattr(value, "spec", None)
    except Exception:  # a hostile __getattr__ is not a machine
        return None
    return spec if isinstance(spec, MachineSpec) else None


def spec_of(machine: object, name: str | None = None) -> MachineSpec:
    """
    The :class:`MachineSpec` of anything ``render()``
    accepts.

    ``name`` only applies to plain Automat machines, which have none of
    their own; fsmcancel machines keep the name they were built with.
    """
    if isinstance(machine, MachineSpec):
        return machine
    spec = spec_attribute(machine)
    if spec is not None:
        return spec
    if is_automat_machine(machine):
        return spec_from_automat(machine, name)
    raise TypeError(
        "expected a MachineSpec, an fsmcancel machine or operation, or an Automat "
        f"TypeMachine/MethodicalMachine, not {type(machine).__qualname__}"
    )


def current_state(machine: object) -> str | None:
    """
    The state a live operation is in, which a diagram of it highlights:
    an operation has a ``.spec`` and a string ``.state``; factories don't.
    """
    if isinstance(machine, MachineSpec) or spec_attribute(machine) is None:
        return None
    state = getattr(machine, "state", None)
    return state if isinstance(state, str) else None
