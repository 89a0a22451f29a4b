"""
A plain-data description of a built machine.

Diagrams, the ``cancel in every state`` test helper and build-time checks all
need to look at a machine's structure.  Automat keeps that structure private,
so fsmcancel records it while the machine is being defined and freezes it
here, where nothing can drift from the code that actually runs.

Owns: frozen plain data.  Must not touch: anything; everything else reads
it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StateKind = Literal["running", "cleanup", "terminal"]


@dataclass(frozen=True)
class StateSpec:
    """
    One state.

    ``kind`` says what ``cancel`` means there: in a ``running`` state it is a
    transition the machine defines; in a ``cleanup`` or ``terminal`` state the
    operation is already finishing and fsmcancel handles it.  ``resources``
    are the names the definition declared the state owns (for diagrams and
    build checks; at run time a state may own anything it acquires).
    ``children`` names the machines of the child operations the state runs
    (a child operation or a child group), so diagrams can link to them.
    """

    name: str
    kind: StateKind
    resources: tuple[str, ...] = ()
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransitionSpec:
    """
    One transition: ``source --input--> target``, running ``output``.

    ``output`` is the behaviour's name, or ``None`` for ``.returns(...)``.
    ``automatic`` marks the no-op ``cancel`` loops fsmcancel adds to cleanup
    and terminal states.  ``timeout`` is the call kind whose timeout rule
    feeds this input, if the machine declared one.  ``guard`` is the name of
    the condition that selects this transition among several on the same
    input from the same state (drawn ``input [guard]``); ``None`` for an
    unguarded transition or the fallback.
    """

    source: str
    input: str
    target: str
    output: str | None = None
    automatic: bool = False
    timeout: str | None = None
    guard: str | None = None

    @property
    def is_cancel(self) -> bool:
        return self.input == "cancel"


@dataclass(frozen=True)
class MachineSpec:
    """
    The structure of one machine, in definition order.

    ``timeouts`` is the timeout configuration file the machine runs with by
    default, if it declared one: diagrams label its timeout transitions from
    that file unless told otherwise.
    """

    name: str
    initial: str
    states: tuple[StateSpec, ...]
    transitions: tuple[TransitionSpec, ...]
    timeouts: str | None = None

    def state(self, name: str) -> StateSpec:
        for state in self.states:
            if state.name == name:
                return state
        raise KeyError(name)
