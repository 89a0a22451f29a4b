"""
Guarded transitions and several states in one declaration (issue 11).

Several transitions on one input from one state, each with a condition,
taken in declaration order, with an optional fallback; no guard holding and
no fallback is ``UnexpectedInput`` naming the guards tried.  ``build()``
still refuses what it refuses, and diagrams see ``input [guard]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from fsmcancel import (
    Cancellable,
    DefinitionError,
    Operation,
    OperationBuilder,
    OperationFactory,
    UnexpectedInput,
)
from fsmcancel.testing import cancel_cases
from tests.test_core import error_of, results


class Shares(Cancellable, Protocol):
    def start(self) -> None: ...
    def got(self, share: int) -> None: ...
    def lost(self, share: int) -> None: ...
    def check(self) -> None: ...


@dataclass
class Want:
    needed: int
    have: set[int] = field(default_factory=set)
    tried: list[str] = field(default_factory=list)


Op = Operation[Shares, Want, set[int]]


def have_all(inputs: Shares, op: Op, share: int) -> bool:
    op.core.tried.append("have_all")
    return len(op.core.have | {share}) >= op.core.needed


def is_duplicate(inputs: Shares, op: Op, share: int) -> bool:
    op.core.tried.append("is_duplicate")
    return share in op.core.have


def never(inputs: Shares, op: Op, share: int) -> bool:
    op.core.tried.append("never")
    return False


def finder(fallback: bool = True) -> OperationFactory[Shares, Want, set[int]]:
    b = OperationBuilder(Shares, Want, name="finder", outcome=set)
    idle = b.state("idle")
    fetching = b.state("fetching")
    checking = b.state("checking")
    done = b.terminal_state("done")

    idle.upon(Shares.start).to(fetching).returns(None)

    @fetching.upon(Shares.got).to(done, when=have_all)
    def finish(inputs: Shares, op: Op, share: int) -> None:
        op.core.have.add(share)
        op.succeed(set(op.core.have))

    fetching.upon(Shares.got).loop(when=is_duplicate).returns(None)

    if fallback:

        @fetching.upon(Shares.got).loop()
        def keep(inputs: Shares, op: Op, share: int) -> None:
            op.core.have.add(share)

    # One declaration, several states.
    @(fetching | checking).upon(Shares.lost).to(done)
    def give_up(inputs: Shares, op: Op, share: int) -> None:
        op.fail(LookupError(f"share {share} lost"))

    fetching.upon(Shares.check).to(checking).returns(None)
    (idle | fetching | checking).upon(Shares.cancel).to(done).returns(None)
    return b.build()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def start(clock: Clock, needed: int = 3, fallback: bool = True) -> Op:
    op = finder(fallback)(Want(needed), clock=clock)
    op.inputs.start()
    return op


def test_guards_are_tried_in_declaration_order_then_the_fallback(clock: Clock) -> None:
    op = start(clock)
    out = results(op.completion)
    op.inputs.got(1)
    assert op.core.tried == ["have_all", "is_duplicate"] and op.core.have == {1}
    op.core.tried.clear()
    op.inputs.got(1)  # a duplicate: the second guard's loop
    assert op.core.tried == ["have_all", "is_duplicate"] and op.core.have == {1}
    op.inputs.got(2)
    op.core.tried.clear()
    op.inputs.got(3)
    assert op.core.tried == ["have_all"]  # the first that holds is taken
    assert op.state == "done" and out == [{1, 2, 3}]


def test_no_guard_and_no_fallback_is_unexpected_naming_the_guards(clock: Clock) -> None:
    op = start(clock, fallback=False)
    with pytest.raises(UnexpectedInput) as raised:
        op.inputs.got(7)
    message = str(raised.value)
    assert "finder#" in message and "'got'" in message and "'fetching'" in message
    assert "no guard held: have_all, is_duplicate; no fallback" in message
    assert op.state == "fetching" and not op.done and op.core.have == set()
    results(op.completion)
    op.cancel()


def test_an_input_fed_from_inside_with_no_guard_holding_fails_the_operation(
    clock: Clock,
) -> None:
    class Feed(Cancellable, Protocol):
        def go(self) -> None: ...
        def pick(self) -> None: ...

    b = OperationBuilder(Feed, object, name="inner")
    s = b.state("s")
    end = b.terminal_state("end")

    def no(inputs: Feed, op: Operation[Feed, object]) -> bool:
        return False

    @s.upon(Feed.go).loop()
    def go(inputs: Feed, op: Operation[Feed, object]) -> None:
        inputs.pick()

    s.upon(Feed.pick).to(end, when=no).returns(None)
    s.upon(Feed.cancel).to(end).returns(None)
    op = b.build()(object(), clock=clock)
    out = results(op.completion)
    op.inputs.go()
    error = error_of(out)
    assert isinstance(error, UnexpectedInput) and "no guard held: no" in str(error)


def test_a_guard_that_raises_fails_the_operation(clock: Clock) -> None:
    op = start(clock)
    out = results(op.completion)
    op.core.have = None  # type: ignore[assignment]  # have_all will raise TypeError
    op.inputs.got(1)
    assert isinstance(error_of(out), TypeError)


def test_one_declaration_covers_several_states(clock: Clock) -> None:
    for to_checking in (False, True):
        op = start(clock)
        out = results(op.completion)
        if to_checking:
            op.inputs.check()
        op.inputs.lost(4)
        assert isinstance(error_of(out), LookupError)


def test_guards_see_the_data_of_a_data_state(clock: Clock) -> None:
    class Count(Cancellable, Protocol):
        def start(self, limit: int) -> None: ...
        def tick(self) -> None: ...

    b = OperationBuilder(Count, list, name="counter", outcome=int)
    idle = b.state("idle")

    def limit_of(inputs: Count, op: Operation[Count, list[int], int], limit: int) -> list[int]:
        return [limit]

    counting = b.state("counting", limit_of)
    done = b.terminal_state("done")
    idle.upon(Count.start).to(counting).returns(None)

    def reached(inputs: Count, op: Operation[Count, list[int], int], data: list[int]) -> bool:
        return len(op.core) + 1 >= data[0]

    @counting.upon(Count.tick).to(done, when=reached)
    def last(inputs: Count, op: Operation[Count, list[int], int], data: list[int]) -> None:
        op.succeed(len(op.core) + 1)

    @counting.upon(Count.tick).loop()
    def more(inputs: Count, op: Operation[Count, list[int], int], data: list[int]) -> None:
        op.core.append(1)

    (idle | counting).upon(Count.cancel).to(done).returns(None)
    op = b.build()([], clock=clock)
    out = results(op.completion)
    op.inputs.start(3)
    op.inputs.tick()
    op.inputs.tick()
    assert out == []
    op.inputs.tick()
    assert out == [3]


def test_the_spec_records_guards_in_order() -> None:
    spec = finder().spec
    got = [(t.source, t.target, t.guard) for t in spec.transitions if t.input == "got"]
    assert got == [
        ("fetching", "done", "have_all"),
        ("fetching", "fetching", "is_duplicate"),
        ("fetching", "fetching", None),
    ]
    lost = sorted(t.source for t in spec.transitions if t.input == "lost")
    assert lost == ["checking", "fetching"]


def test_cancel_cases_cover_a_guarded_machine() -> None:
    factory = finder()
    for case in cancel_cases(factory):
        case.check(lambda: Want(3))


class TestRefusals:
    def builder(self) -> OperationBuilder[Shares, Want]:
        return OperationBuilder(Shares, Want, name="bad")

    def test_a_guarded_cancel_needs_a_fallback(self) -> None:
        b = self.builder()
        a = b.state("a")
        end = b.terminal_state("end")
        a.upon(Shares.cancel).to(end, when=lambda inputs, op, reason=None: True).returns(None)
        with pytest.raises(DefinitionError, match="guarded cancel transitions need an unguarded"):
            b.build()

    def test_two_fallbacks_are_refused(self) -> None:
        b = self.builder()
        a = b.state("a")
        a.upon(Shares.got).loop().returns(None)
        with pytest.raises(DefinitionError, match="already has a transition upon 'got'"):
            a.upon(Shares.got).loop()

    def test_guards_do_not_count_as_handling_cancel(self) -> None:
        b = self.builder()
        a = b.state("a")
        end = b.terminal_state("end")
        a.upon(Shares.got).to(end, when=never).returns(None)
        with pytest.raises(DefinitionError, match="running states without a cancel transition: a"):
            b.build()

    def test_an_async_guard_or_behaviour_is_refused(self) -> None:
        b = self.builder()
        a = b.state("a")
        end = b.terminal_state("end")

        async def later(inputs: Shares, op: Op, share: int) -> bool:
            return True

        with pytest.raises(DefinitionError, match=r"bad: guard .*later.* is async def"):
            a.upon(Shares.got).to(end, when=later)  # type: ignore[arg-type]

        async def behaviour(inputs: Shares, op: Op, share: int) -> None:
            pass

        with pytest.raises(DefinitionError, match=r"bad: behaviour .*behaviour.* is async def"):
            a.upon(Shares.lost).to(end)(behaviour)  # type: ignore[arg-type]

    def test_a_set_keeps_every_refusal(self) -> None:
        b = self.builder()
        a = b.state("a")
        c = b.cleanup_state("c")
        with pytest.raises(DefinitionError, match="cleanup state 'c' cannot lead back"):
            (a | c).upon(Shares.got).to(a)


@given(shares=st.lists(st.integers(0, 5), max_size=20), needed=st.integers(1, 4))
def test_guarded_outcome_matches_a_model(shares: list[int], needed: int) -> None:
    op = start(Clock(), needed)
    out = results(op.completion)
    have: set[int] = set()
    for share in shares:
        if op.done:
            with pytest.raises(UnexpectedInput):
                op.inputs.got(share)
            continue
        op.inputs.got(share)
        have.add(share)
        if len(have) >= needed:
            assert out == [have]
    if not op.done:
        assert out == [] and op.core.have == have
        op.cancel()
        assert len(out) == 1
