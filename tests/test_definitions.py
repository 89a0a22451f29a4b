"""
Machines that break a guarantee are refused when they are built, with an
error naming the machine and the offending states.
"""

from __future__ import annotations

from typing import Protocol

import pytest
from automat import NoTransition
from twisted.internet.task import Clock

from fsmcancel import Cancellable, DefinitionError, Operation, OperationBuilder


class Job(Cancellable, Protocol):
    def go(self) -> None: ...
    def step(self) -> None: ...
    def stop(self) -> None: ...


def builder() -> OperationBuilder[Job, object]:
    return OperationBuilder(Job, object, name="job")


def test_running_states_without_cancel_are_named() -> None:
    b = builder()
    a, mid, other = b.state("a"), b.state("mid"), b.state("other")
    end = b.terminal_state("end")
    a.upon(Job.go).to(mid).returns(None)
    mid.upon(Job.go).to(other).returns(None)
    other.upon(Job.stop).to(end).returns(None)
    a.upon(Job.cancel).to(end).returns(None)
    with pytest.raises(
        DefinitionError, match=r"job: running states without a cancel transition: mid, other"
    ):
        b.build()


def test_cancel_must_lead_to_cleanup_or_terminal() -> None:
    b = builder()
    a, other = b.state("a"), b.state("other")
    with pytest.raises(
        DefinitionError,
        match="cancel in 'a' must lead to a cleanup or terminal state, "
        "not to running state 'other'",
    ):
        a.upon(Job.cancel).to(other)


def test_cleanup_states_do_not_define_cancel() -> None:
    b = builder()
    b.state("a")
    closing = b.cleanup_state("closing")
    with pytest.raises(DefinitionError, match="cleanup state 'closing' cannot define cancel"):
        closing.upon(Job.cancel).loop()


def test_terminal_states_have_no_transitions_or_resources() -> None:
    b = builder()
    b.state("a")
    end = b.terminal_state("end")
    with pytest.raises(DefinitionError, match="terminal state 'end' cannot have transitions"):
        end.upon(Job.go).loop()
    # The public API has no way to give a terminal state resources; a
    # definition assembled another way is still refused.
    b2 = builder()
    a = b2.state("a")
    socket_owner = b2._state("end", "terminal", None, ["socket"], ())
    a.upon(Job.cancel).to(socket_owner).returns(None)
    with pytest.raises(DefinitionError, match="terminal states cannot own resources: end"):
        b2.build()


def test_unreachable_states_are_named() -> None:
    b = builder()
    a, island = b.state("a"), b.state("island")
    end = b.terminal_state("end")
    a.upon(Job.cancel).to(end).returns(None)
    island.upon(Job.cancel).to(end).returns(None)
    with pytest.raises(DefinitionError, match="states unreachable from 'a': island"):
        b.build()


def test_states_that_cannot_finish_are_named() -> None:
    b = builder()
    a, loop_a, loop_b = b.state("a"), b.state("loop_a"), b.cleanup_state("loop_b")
    end = b.terminal_state("end")
    a.upon(Job.go).to(loop_a).returns(None)
    a.upon(Job.cancel).to(end).returns(None)
    loop_a.upon(Job.cancel).to(loop_b).returns(None)
    loop_b.upon(Job.step).loop().returns(None)
    with pytest.raises(
        DefinitionError, match="no terminal state can be reached from: loop_a, loop_b"
    ):
        b.build()


def test_no_terminal_state() -> None:
    b = builder()
    b.state("a")
    with pytest.raises(DefinitionError, match="job: the machine has no terminal state"):
        b.build()


def test_protocol_without_cancel() -> None:
    class NoCancel(Protocol):
        def go(self) -> None: ...

    b = OperationBuilder(NoCancel, object, name="nocancel")
    b.state("a")
    with pytest.raises(
        DefinitionError, match=r"NoCancel has no cancel input; inherit fsmcancel\.Cancellable"
    ):
        b.build()


def test_cancel_must_return_none() -> None:
    class Odd(Protocol):
        def cancel(self, reason: str | None = None) -> bool: ...

    b = OperationBuilder(Odd, object, name="odd")
    b.state("a")
    with pytest.raises(DefinitionError, match=r"Odd\.cancel must be declared -> None"):
        b.build()


def test_incomplete_and_duplicate_transitions() -> None:
    b = builder()
    a = b.state("a")
    end = b.terminal_state("end")
    a.upon(Job.cancel).to(end).returns(None)
    a.upon(Job.go).to(end)
    with pytest.raises(DefinitionError, match="already has a transition upon 'go'"):
        a.upon(Job.go).loop()
    with pytest.raises(
        DefinitionError, match=r"without a behaviour or .returns\(\): a --go--> end"
    ):
        b.build()


def test_twice_registered_behaviour() -> None:
    b = builder()
    a = b.state("a")
    end = b.terminal_state("end")
    t = a.upon(Job.cancel).to(end)
    t.returns(None)
    with pytest.raises(DefinitionError, match="already has a behaviour"):
        t.returns(None)


def test_foreign_input_is_refused() -> None:
    class Other(Protocol):
        def go(self) -> None: ...

    b = builder()
    a = b.state("a")
    with pytest.raises(DefinitionError, match="is not an input of"):
        a.upon(Other.go)  # structurally fine for mypy; refused at run time


def test_state_rules() -> None:
    b = builder()
    with pytest.raises(DefinitionError, match="initial state 'a' must be a running state"):
        b.cleanup_state("a")
    b.state("a")
    with pytest.raises(DefinitionError, match="state 'a' is declared twice"):
        b.state("a")
    with pytest.raises(DefinitionError, match="unexpected= must be 'raise' or 'log'"):
        OperationBuilder(Job, object, name="x", unexpected="ignore")  # type: ignore[arg-type]


def test_initial_state_cannot_be_a_data_state() -> None:
    b = builder()
    with pytest.raises(DefinitionError, match="initial state 'a' cannot be a data state"):
        b.state("a", lambda inputs, op: 1)


def test_nothing_after_build() -> None:
    b = builder()
    a = b.state("a")
    end = b.terminal_state("end")
    a.upon(Job.cancel).to(end).returns(None)
    b.build()
    with pytest.raises(DefinitionError, match="after build"):
        b.state("late")
    with pytest.raises(DefinitionError, match="already called"):
        b.build()


def test_the_index_answers_like_automat() -> None:
    """
    fsmcancel replaces Automat's linear transition scan with a dictionary;
    for every (state, input) pair it must give Automat's own answer.
    """
    from automat._core import Automaton

    b = builder()
    a, mid = b.state("a"), b.state("mid")
    end = b.terminal_state("end")
    a.upon(Job.go).to(mid).returns(None)
    mid.upon(Job.step).loop().returns(None)
    mid.upon(Job.stop).to(end).returns(None)
    a.upon(Job.cancel).to(end).returns(None)
    mid.upon(Job.cancel).to(end).returns(None)
    factory = b.build()
    automaton = factory._automat.__automat_automaton__
    states = {t[0] for t in automaton.allTransitions()} | {t[2] for t in automaton.allTransitions()}
    for state in states:
        for symbol in ("go", "step", "stop", "cancel", "nothing"):
            try:
                expected: object = Automaton.outputForInput(automaton, state, symbol)
                expected = (expected[0], tuple(expected[1]))  # type: ignore[index]
            except NoTransition:
                expected = NoTransition
            try:
                got: object = automaton.outputForInput(state, symbol)
            except NoTransition:
                got = NoTransition
            assert got == expected, (state.name, symbol)


def test_a_built_machine_runs() -> None:
    b = builder()
    a = b.state("a")
    end = b.terminal_state("end")

    @a.upon(Job.stop).to(end)
    def stop(inputs: Job, op: Operation[Job, object]) -> None:
        op.succeed("stopped")

    a.upon(Job.cancel).to(end).returns(None)
    op = b.build()(object(), clock=Clock())
    out: list[object] = []
    op.completion.addBoth(out.append)
    op.inputs.stop()
    assert out == ["stopped"]
