# Automat's MethodicalMachine is untyped; Lamp below is that API on purpose.
# mypy: disable-error-code="no-untyped-call,untyped-decorator"
"""
Machines for the diagram tests, as a module ``fsmcancel diagram`` can target.

Hand-built specs stand in for fsmcancel machines (anything with ``.spec``),
so the renderer is tested independently of the builder; the plain Automat
machines check discovery and conversion of both Automat APIs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from automat import MethodicalMachine, TypeMachineBuilder

from fsmcancel.core._spec import MachineSpec, StateSpec, TransitionSpec

DOWNLOAD = MachineSpec(
    name="download",
    initial="connecting",
    states=(
        StateSpec("connecting", "running", ("connection attempt", "connect timer")),
        StateSpec("receiving", "running", ("connection",)),
        StateSpec("closing", "cleanup", ("connection",)),
        StateSpec("done", "terminal"),
        StateSpec("failed", "terminal"),
    ),
    transitions=(
        TransitionSpec("connecting", "connected", "receiving", "start_reading"),
        TransitionSpec("connecting", "connect_failed", "failed", "record_error"),
        TransitionSpec("connecting", "cancel", "failed", "abort_connect"),
        TransitionSpec("receiving", "data", "receiving", "buffer"),
        TransitionSpec("receiving", "finished", "closing", None),
        TransitionSpec("receiving", "stalled", "closing", "give_up", timeout="read"),
        TransitionSpec("receiving", "cancel", "closing", "abort_read"),
        TransitionSpec("closing", "closed", "done", "deliver"),
        TransitionSpec("closing", "cancel", "closing", None, automatic=True),
        TransitionSpec("done", "cancel", "done", None, automatic=True),
        TransitionSpec("failed", "cancel", "failed", None, automatic=True),
    ),
)


@dataclass(frozen=True)
class FakeFactory:
    """
    What an fsmcancel machine factory looks like to the diagram code.
    """

    spec: MachineSpec

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class FakeOperation:
    """
    What a live operation looks like: a spec and a current state.
    """

    spec: MachineSpec
    state: str


download = FakeFactory(DOWNLOAD)
not_a_machine = 42


class DoorInputs(Protocol):
    def open(self) -> None: ...
    def close(self) -> None: ...
    def lock(self) -> None: ...


class DoorCore:
    pass


def _door() -> object:
    builder = TypeMachineBuilder(DoorInputs, DoorCore)
    closed = builder.state("closed")
    opened = builder.state("opened")
    locked = builder.state("locked")
    closed.upon(DoorInputs.open).to(opened).returns(None)
    opened.upon(DoorInputs.close).to(closed).returns(None)

    @closed.upon(DoorInputs.lock).to(locked)
    def turn_key(inputs: DoorInputs, core: DoorCore) -> None:
        pass

    return builder.build()


door = _door()


class Lamp:
    """
    A MethodicalMachine as a class attribute, Automat's classic idiom.
    """

    _machine = MethodicalMachine()

    @_machine.state(initial=True)
    def off(self) -> None:
        "The lamp is off."

    @_machine.state()
    def on(self) -> None:
        "The lamp is on."

    @_machine.input()
    def flip(self) -> None:
        "Flip the switch."

    @_machine.output()
    def _light(self) -> None:
        pass

    @_machine.output()
    def _darken(self) -> None:
        pass

    off.upon(flip, enter=on, outputs=[_light])
    on.upon(flip, enter=off, outputs=[_darken])


# A MethodicalMachine at module level, in the attribute name everybody
# uses: its diagram is titled after the module, not "machine".
machine = MethodicalMachine()


@machine.state(initial=True)
def idle(self: object) -> None:
    "Waiting."


@machine.state()
def ringing(self: object) -> None:
    "Ringing."


@machine.input()
def ring(self: object) -> None:
    "Start ringing."


@machine.input()
def answer(self: object) -> None:
    "Stop ringing."


idle.upon(ring, enter=ringing, outputs=[])
ringing.upon(ring, enter=ringing, outputs=[])
ringing.upon(answer, enter=idle, outputs=[])
