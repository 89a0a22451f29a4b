"""
Child groups (issue 11): at most C children at a time, each outcome an input
that names its child, enough after k successes (the rest cancelled),
exhausted when k can no longer be reached; releasing the group cancels every
live child and waits for its cleanup, whose errors reach the parent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from fsmcancel import (
    Cancellable,
    ChildGroup,
    CleanupFailed,
    Operation,
    OperationBuilder,
    OperationCancelled,
)
from fsmcancel.testing import cancel_cases
from tests.test_core import error_of, results

# -- a child: works until told, then closes politely -------------------------------------


class Work(Cancellable, Protocol):
    def start(self) -> None: ...
    def worked(self, value: str) -> None: ...
    def broke(self, failure: Failure) -> None: ...
    def closed(self, how: str) -> None: ...


@dataclass(eq=False)
class Job:
    key: int
    work: Deferred[str] = field(default_factory=Deferred)
    bye: Deferred[str] = field(default_factory=Deferred)
    fail_close: bool = False
    released: list[str] = field(default_factory=list)


JOp = Operation[Work, Job, str]

_w = OperationBuilder(Work, Job, name="job", outcome=str)
w_idle = _w.state("idle")
w_running = _w.state("running", resources=["work"])
w_closing = _w.cleanup_state("closing", resources=["bye", "socket"])
w_done = _w.terminal_state("done")


def _close(inputs: Work, op: JOp) -> None:
    def release(_: object) -> None:
        op.core.released.append("socket")
        if op.core.fail_close:
            raise RuntimeError(f"job {op.core.key}: close failed")

    op.own(object(), release, name="socket")
    op.watch(op.core.bye, inputs.closed, name="bye")


@w_idle.upon(Work.start).to(w_running)
def _w_start(inputs: Work, op: JOp) -> None:
    op.watch(op.core.work, inputs.worked, inputs.broke, name="work")


@w_running.upon(Work.worked).to(w_closing)
def _w_worked(inputs: Work, op: JOp, value: str) -> None:
    op.succeed(value)
    _close(inputs, op)


@w_running.upon(Work.broke).to(w_closing)
def _w_broke(inputs: Work, op: JOp, failure: Failure) -> None:
    op.fail(failure)
    _close(inputs, op)


@w_running.upon(Work.cancel).to(w_closing)
def _w_cancel(inputs: Work, op: JOp, reason: str | None = None) -> None:
    _close(inputs, op)


w_idle.upon(Work.cancel).to(w_done).returns(None)
w_closing.upon(Work.closed).to(w_done).returns(None)
JOB = _w.build()


# -- a parent: k of n, C at a time --------------------------------------------------------


class Fetch(Cancellable, Protocol):
    def start(self) -> None: ...
    def ok(self, key: int, value: str) -> None: ...
    def failed(self, key: int, failure: Failure) -> None: ...
    def tick(self) -> None: ...


@dataclass(eq=False)
class Plan:
    jobs: list[Job]
    limit: int | None
    needed: int | None
    clock: Clock
    children: list[JOp] = field(default_factory=list)
    seen: list[tuple[str, int]] = field(default_factory=list)

    def starts(self) -> Iterator[tuple[int, Any]]:
        for job in self.jobs:
            yield job.key, lambda job=job: self.start(job)

    def start(self, job: Job) -> JOp:
        child = JOB(job, clock=self.clock, grace=None)
        self.children.append(child)
        child.inputs.start()
        return child


POp = Operation[Fetch, Plan, dict[int, str]]
Group = ChildGroup[int, str]

_p = OperationBuilder(Fetch, Plan, name="fetch-all", outcome=dict, grace=None)
p_idle = _p.state("idle")


def _start_group(inputs: Fetch, op: POp) -> Group:
    plan = op.core
    return op.children(
        plan.starts(),
        on_result=inputs.ok,
        on_failure=inputs.failed,
        limit=plan.limit,
        needed=plan.needed,
        name="jobs",
    )


p_fetching = _p.state("fetching", _start_group, resources=["jobs"], children=[JOB])
p_done = _p.terminal_state("done")
p_idle.upon(Fetch.start).to(p_fetching).returns(None)


def _enough(inputs: Fetch, op: POp, group: Group, key: int, value: str) -> bool:
    return group.enough


def _exhausted(inputs: Fetch, op: POp, group: Group, key: int, failure: Failure) -> bool:
    return group.exhausted


@p_fetching.upon(Fetch.ok).to(p_done, when=_enough)
def _p_done(inputs: Fetch, op: POp, group: Group, key: int, value: str) -> None:
    op.core.seen.append(("ok", key))
    op.succeed(dict(group.results))


@p_fetching.upon(Fetch.ok).loop()
def _p_ok(inputs: Fetch, op: POp, group: Group, key: int, value: str) -> None:
    op.core.seen.append(("ok", key))


@p_fetching.upon(Fetch.failed).to(p_done, when=_exhausted)
def _p_give_up(inputs: Fetch, op: POp, group: Group, key: int, failure: Failure) -> None:
    op.core.seen.append(("failed", key))
    op.fail(LookupError(f"only {len(group.results)} of {group.needed} succeeded"))


@p_fetching.upon(Fetch.failed).loop()
def _p_failed(inputs: Fetch, op: POp, group: Group, key: int, failure: Failure) -> None:
    op.core.seen.append(("failed", key))


p_fetching.upon(Fetch.tick).loop().returns(None)
(p_idle | p_fetching).upon(Fetch.cancel).to(p_done).returns(None)
FETCH = _p.build()


def plan(n: int, limit: int | None = 2, needed: int | None = 2, **job: Any) -> Plan:
    return Plan([Job(i, **job) for i in range(n)], limit, needed, Clock())


def run(p: Plan) -> tuple[POp, list[object]]:
    op = FETCH(p, clock=p.clock)
    out = results(op.completion)
    op.inputs.start()
    return op, out


def by_key(p: Plan, key: int) -> Job:
    return p.jobs[key]


# -- the behaviour, one rule at a time ------------------------------------------------------


def test_at_most_limit_at_once_started_lazily() -> None:
    p = plan(5, limit=2, needed=5)
    op, _out = run(p)
    assert [c.core.key for c in p.children] == [0, 1]
    p.jobs[0].work.callback("a")
    # A child still closing its connection is still alive: it holds its slot.
    assert [c.core.key for c in p.children] == [0, 1] and op.core.seen == []
    p.jobs[0].bye.callback("bye")
    assert [c.core.key for c in p.children] == [0, 1, 2]  # a slot freed
    p.jobs[1].work.errback(Failure(OSError("no")))
    p.jobs[1].bye.callback("bye")
    assert [c.core.key for c in p.children] == [0, 1, 2, 3]
    assert op.core.seen == [("ok", 0), ("failed", 1)]
    for c in p.children:
        if not c.core.bye.called:
            c.core.bye.callback("bye")
    results(op.completion)
    op.cancel()


def test_enough_after_k_successes_cancels_the_rest_and_waits() -> None:
    p = plan(4, limit=None, needed=2)
    op, out = run(p)
    assert len(p.children) == 4
    for key in (2, 0):  # a child's outcome arrives once it has cleaned up
        p.jobs[key].work.callback({2: "c", 0: "a"}[key])
        p.jobs[key].bye.callback("bye")
    # Enough: the parent is done, the two others were cancelled and are
    # closing; the parent's completion waits for their cleanup.
    assert op.state == "done" and out == []
    assert [c.state for c in p.children] == ["done", "closing", "done", "closing"]
    assert op.core.seen == [("ok", 2), ("ok", 0)]  # the rest were not fed in
    for key in (1, 3):
        p.jobs[key].bye.callback("bye")
    assert out == [{2: "c", 0: "a"}]
    assert all(c.done for c in p.children)


def test_exhausted_when_k_can_no_longer_be_reached() -> None:
    p = plan(3, limit=3, needed=2)
    op, out = run(p)
    p.jobs[0].work.errback(Failure(OSError("x")))
    p.jobs[0].bye.callback("bye")
    assert op.state == "fetching"  # 2 of the 2 still running could succeed
    p.jobs[1].work.errback(Failure(OSError("y")))
    p.jobs[1].bye.callback("bye")
    assert op.state == "done"
    for c in p.children:
        if not c.core.bye.called:
            c.core.bye.callback("bye")
    error = error_of(out)
    assert isinstance(error, LookupError) and "only 0 of 2" in str(error)


def test_needed_none_means_all() -> None:
    p = plan(3, limit=1, needed=None)
    _op, out = run(p)
    for i in range(3):
        p.jobs[i].work.callback(str(i))
        p.jobs[i].bye.callback("bye")
    assert out == [{0: "0", 1: "1", 2: "2"}]


def test_releasing_the_group_cancels_every_live_child_and_waits() -> None:
    p = plan(3, limit=None, needed=3)
    op, out = run(p)
    op.cancel("user")
    assert op.state == "done" and out == []
    assert [c.state for c in p.children] == ["closing"] * 3
    for c in p.children:
        c.core.bye.callback("bye")
    error = error_of(out)
    assert isinstance(error, OperationCancelled) and error.reason == "user"
    assert all(c.core.released == ["socket"] for c in p.children)


def test_children_cleanup_errors_reach_the_parent() -> None:
    p = plan(3, limit=None, needed=1, fail_close=True)
    p.jobs[1].fail_close = False
    op, out = run(p)
    p.jobs[1].work.callback("b")
    p.jobs[1].bye.callback("bye")  # enough; 0 and 2 are cancelled by the group
    for key in (0, 2):
        p.jobs[key].bye.callback("bye")
    error = error_of(out)
    # The closes of the two the group cancelled failed: those errors reach
    # the parent's completion, with the result it had.
    assert op.core.seen == [("ok", 1)]
    assert isinstance(error, CleanupFailed) and error.outcome == {1: "b"}
    messages = sorted(str(e.value) for e in error.errors)
    assert messages == ["job 0: close failed", "job 2: close failed"]


def test_forcing_the_parent_forces_the_children() -> None:
    p = plan(3, limit=None, needed=3)
    op, out = run(p)
    op.cancel()
    op.force("shutdown")
    assert len(out) == 1 and all(c.done for c in p.children)


def test_a_start_that_raises_is_that_childs_failure() -> None:
    p = plan(2, limit=None, needed=1)

    def broken() -> JOp:
        raise ConnectionRefusedError("no route")

    p.jobs = p.jobs[:1]
    op = FETCH(p, clock=p.clock)
    out = results(op.completion)
    original = p.starts

    def starts() -> Iterator[tuple[int, Any]]:
        yield 9, broken
        yield from original()

    p.starts = starts  # type: ignore[method-assign]
    op.inputs.start()
    assert op.core.seen == [("failed", 9)]
    p.jobs[0].work.callback("a")
    p.jobs[0].bye.callback("bye")
    assert out == [{0: "a"}]


def test_add_more_work_and_hand_the_group_over() -> None:
    class Feed(Cancellable, Protocol):
        def go(self) -> None: ...
        def more(self) -> None: ...
        def ok(self, key: int, value: str) -> None: ...

    b = OperationBuilder(Feed, Plan, name="handing", grace=None)
    a = b.state("a", resources=["g"], children=[JOB])
    bb = b.state("b", resources=["g"], children=[JOB])
    done = b.terminal_state("done")

    @a.upon(Feed.go).to(bb)
    def go(inputs: Feed, op: Operation[Feed, Plan]) -> None:
        op.hand_over(op.resource("g"))

    @(a | bb).upon(Feed.ok).loop()
    def ok(inputs: Feed, op: Operation[Feed, Plan], key: int, value: str) -> None:
        op.core.seen.append(("ok", key))

    (a | bb).upon(Feed.cancel).to(done).returns(None)
    p = plan(1, limit=1, needed=None)
    op = b.build()(p, clock=p.clock)
    group = op.children(p.starts(), on_result=op.inputs.ok, limit=1, name="g")
    group.add(7, lambda: p.start(Job(7)))
    assert group.live == [0] and [c.core.key for c in p.children] == [0]
    op.inputs.go()  # handed over: nothing was cancelled
    assert [c.state for c in p.children] == ["running"]
    p.children[0].core.work.callback("x")
    p.children[0].core.bye.callback("bye")
    assert group.live == [7] and op.core.seen == [("ok", 0)]
    out = results(op.completion)
    op.cancel()
    for c in p.children:
        if not c.core.bye.called:
            c.core.bye.callback("bye")
    assert len(out) == 1 and all(c.done for c in p.children)


def test_no_on_failure_fails_the_parent() -> None:
    class One(Cancellable, Protocol):
        def ok(self, key: int, value: str) -> None: ...

    b = OperationBuilder(One, Plan, name="strict", grace=None)
    s = b.state("s", resources=["jobs"])
    done = b.terminal_state("done")
    s.upon(One.ok).loop().returns(None)
    s.upon(One.cancel).to(done).returns(None)
    p = plan(1)
    op = b.build()(p, clock=p.clock)
    out = results(op.completion)
    op.children(p.starts(), on_result=op.inputs.ok, name="jobs")
    p.jobs[0].work.errback(Failure(OSError("down")))
    p.jobs[0].bye.callback("bye")
    assert isinstance(error_of(out), OSError)


def test_bad_arguments_are_refused() -> None:
    p = plan(1)
    op = FETCH(p, clock=p.clock)
    with pytest.raises(ValueError, match=r"fetch-all#\d+: children\(limit=...\) must be"):
        op.children([], on_result=op.inputs.ok, limit=0)
    with pytest.raises(ValueError, match=r"needed=...\) must be"):
        op.children([], on_result=op.inputs.ok, needed=True)
    results(op.completion)
    op.cancel()


def test_the_spec_names_the_child_machine() -> None:
    assert FETCH.spec.state("fetching").children == ("job",)


def test_cancel_anywhere() -> None:
    for case in cancel_cases(FETCH):
        case.check(lambda: plan(3))


# -- interleavings ------------------------------------------------------------------------


class GroupMachine(RuleBasedStateMachine):
    """
    Children answer, fail and close in any order; the parent may be cancelled
    or forced at any moment.  Model: the group's own bookkeeping must agree
    with what the children did, at most ``limit`` run at once, nothing is fed
    after the group is released, the completion fires once, after every
    child is done, and every close error of a child the group cancelled
    reaches it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.p: Plan | None = None
        self.op: POp | None = None
        self.out: list[object] = []
        self.answers: dict[int, bool] = {}

    @rule(
        n=st.integers(1, 6),
        limit=st.sampled_from([None, 1, 2, 3]),
        needed=st.sampled_from([None, 1, 2, 4]),
        fail_close=st.booleans(),
    )
    @precondition(lambda self: self.op is None)
    def create(self, n: int, limit: int | None, needed: int | None, fail_close: bool) -> None:
        self.p = plan(n, limit=limit, needed=needed, fail_close=fail_close)
        self.op, self.out = run(self.p)

    def children(self) -> list[JOp]:
        return [] if self.p is None else self.p.children

    @precondition(lambda self: any(not c.core.work.called for c in self.children()))
    @rule(data=st.data(), ok=st.booleans())
    def answer(self, data: st.DataObject, ok: bool) -> None:
        child = data.draw(st.sampled_from([c for c in self.children() if not c.core.work.called]))
        self.answers[child.core.key] = ok
        if ok:
            child.core.work.callback(f"v{child.core.key}")
        else:
            child.core.work.errback(Failure(OSError(f"job {child.core.key} broke")))

    @precondition(lambda self: any(not c.core.bye.called for c in self.children()))
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        child = data.draw(st.sampled_from([c for c in self.children() if not c.core.bye.called]))
        child.core.bye.callback("bye")

    @precondition(lambda self: self.op is not None)
    @rule(force=st.booleans())
    def cancel(self, force: bool) -> None:
        assert self.op is not None
        if force:
            self.op.force("forced")
        else:
            self.op.cancel("cancelled")

    @invariant()
    def at_most_limit_running(self) -> None:
        if self.p is None or self.p.limit is None or self.op is None:
            return
        running = [c for c in self.p.children if c.state == "running"]
        assert len(running) <= self.p.limit

    @invariant()
    def completes_once_after_every_child(self) -> None:
        if self.op is None:
            return
        assert len(self.out) == (1 if self.op.done else 0)
        if self.op.done:
            assert all(c.done for c in self.children())

    @invariant()
    def fed_only_what_children_did(self) -> None:
        if self.p is None:
            return
        for what, key in self.p.seen:
            # Fed in only for a child that answered, as it ended, once: an
            # answer whose close failed is a failure (CleanupFailed).
            assert (what == "ok") == (self.answers[key] and not self.p.jobs[key].fail_close)
        assert len({key for _, key in self.p.seen}) == len(self.p.seen)

    def teardown(self) -> None:
        if self.op is None:
            return
        if not self.op.done:
            self.op.force("teardown")
        assert len(self.out) == 1 and all(c.done for c in self.children())
        for c in self.children():
            for d in (c.core.work, c.core.bye):
                if not d.called:
                    d.callback("late")  # released: must not reach anyone
        assert len(self.out) == 1
        result = self.out[0]
        if isinstance(result, Failure):
            result.trap(Exception)


GroupMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)
TestGroupInterleavings = GroupMachine.TestCase


def test_unhandled_failures_are_not_left_behind() -> None:
    # A child whose work had already failed when it started.
    p = plan(1, limit=None, needed=1)
    p.jobs[0].work = fail(OSError("dead on arrival"))
    op, out = run(p)
    assert op.core.seen == []  # the child is closing its connection
    p.jobs[0].bye.callback("bye")
    assert op.core.seen == [("failed", 0)]
    assert isinstance(error_of(out), LookupError)
