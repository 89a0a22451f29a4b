"""
``OperationService`` in a real ``MultiService``, under ``Clock``: stopping
cancels every tracked operation once, waits for each cleanup, and forces
what is left when the grace period runs out.  The reactor-shutdown half,
over real sockets, is in ``test_service_shutdown.py``.
"""

from __future__ import annotations

import gc
import math
import re
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from fsmcancel import Cancellable, Operation, OperationBuilder, OperationCancelled
from fsmcancel.service import DEFAULT_GRACE, STOPPING, OperationService

# -- a job whose cancel closes politely, as long as the peer answers -------------


class Job(Cancellable, Protocol):
    def start(self) -> None: ...
    def finished(self, value: str) -> None: ...
    def said_bye(self, value: object) -> None: ...


@dataclass
class Peer:
    """
    What a job talks to: ``work`` fires with its result; ``bye`` is the
    peer's answer to a polite close (``None``: close at once).  Each
    Deferred records whether the job's release cancelled it.
    """

    polite: bool = True
    cancelled: list[str] = field(default_factory=list)
    work: Deferred[str] = field(init=False)
    bye: Deferred[object] = field(init=False)

    def __post_init__(self) -> None:
        self.work = Deferred(lambda _: self.cancelled.append("work"))
        self.bye = Deferred(lambda _: self.cancelled.append("bye"))


JobOp = Operation[Job, Peer]

# No cleanup grace of its own: the service's grace is what these tests watch.
_b = OperationBuilder(Job, Peer, name="job", grace=None)
idle = _b.state("idle")
running = _b.state("running", resources=["work"])
closing = _b.cleanup_state("closing", resources=["bye"])
done = _b.terminal_state("done")


@idle.upon(Job.start).to(running)
def _start(inputs: Job, op: JobOp) -> None:
    op.watch(op.core.work, inputs.finished, name="work")


@running.upon(Job.finished).to(done)
def _finished(inputs: Job, op: JobOp, value: str) -> None:
    op.succeed(value)


@running.upon(Job.cancel).to(closing)
def _close(inputs: Job, op: JobOp, reason: str | None = None) -> None:
    op.watch(op.core.bye, inputs.said_bye, name="bye")
    if not op.core.polite:
        op.core.bye.callback("bye")


closing.upon(Job.said_bye).to(done).returns(None)
idle.upon(Job.cancel).to(done).returns(None)

job = _b.build()


def start_job(
    service: OperationService, clock: Clock, polite: bool = True, *, track_first: bool = True
) -> JobOp:
    op = job(Peer(polite), clock=clock)
    # Its owner's errback; tests look at the outcome through observe().
    op.completion.addErrback(lambda f: f.trap(OperationCancelled))
    if track_first:
        service.track(op)
        op.inputs.start()
    else:
        op.inputs.start()
        service.track(op)
    return op


def outcome(d: Deferred[Any]) -> list[object]:
    seen: list[object] = []
    d.addBoth(seen.append)
    return seen


def cancelled_reason(result: object) -> OperationCancelled:
    assert isinstance(result, Failure), result
    assert isinstance(result.value, OperationCancelled), result.value
    return result.value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(clock: Clock) -> tuple[MultiService, OperationService]:
    application = MultiService()
    operations = OperationService(grace=5.0, clock=clock)
    operations.setServiceParent(application)
    application.startService()
    return application, operations


# -- stopping ---------------------------------------------------------------------


def test_stop_cancels_every_operation_and_waits_for_each_cleanup(
    app: tuple[MultiService, OperationService], clock: Clock
) -> None:
    application, operations = app
    quick, slow, slower = (start_job(operations, clock, polite) for polite in (False, True, True))
    completions = [outcome(op.observe()) for op in (quick, slow, slower)]

    stopped = outcome(application.stopService())
    assert not operations.running
    # Every one was asked once, with the service's reason, and is closing
    # politely: nothing fires until the peers answer.
    assert [op.state for op in (quick, slow, slower)] == ["done", "closing", "closing"]
    assert [op.core.cancelled for op in (quick, slow, slower)] == [["work"]] * 3
    assert stopped == [] and len(operations.operations()) == 2
    assert cancelled_reason(completions[0][0]).reason == STOPPING

    slow.core.bye.callback("bye")
    assert stopped == [] and operations.operations() == [slower]
    slower.core.bye.callback("bye")
    assert stopped == []  # one more reactor turn, for aborted connections to close
    clock.advance(0)
    # MultiService's DeferredList: one child, which succeeded.
    assert stopped == [[(True, None)]]
    for seen in completions:
        error = cancelled_reason(seen[0])
        assert error.reason == STOPPING and not error.forced
    assert clock.getDelayedCalls() == []  # the grace timer was disarmed
    assert operations.operations() == []


def test_grace_period_forces_what_is_left(
    app: tuple[MultiService, OperationService], clock: Clock
) -> None:
    application, operations = app
    polite, stuck = start_job(operations, clock), start_job(operations, clock)
    completions = [outcome(op.observe()) for op in (polite, stuck)]
    stopped = outcome(application.stopService())
    polite.core.bye.callback("bye")

    clock.advance(5.0 - 0.001)
    assert stopped == [] and stuck.state == "closing" and completions[1] == []
    clock.advance(0.001)
    assert stopped == [[(True, None)]]
    error = cancelled_reason(completions[1][0])
    assert error.forced and error.reason == STOPPING and error.state == "running"
    # Forcing released what the cleanup state held: the unanswered close.
    assert stuck.core.cancelled == ["work", "bye"]
    assert not cancelled_reason(completions[0][0]).forced


def test_the_default_grace_period(clock: Clock) -> None:
    operations = OperationService(clock=clock)
    assert operations.grace == DEFAULT_GRACE
    operations.startService()
    stuck = start_job(operations, clock)
    completion = outcome(stuck.observe())
    stopped = outcome(operations.stopService())
    clock.advance(DEFAULT_GRACE - 0.001)
    assert stopped == [] and completion == []
    clock.advance(0.001)
    assert stopped == [None] and cancelled_reason(completion[0]).forced


def test_stopping_with_nothing_live_is_immediate(clock: Clock) -> None:
    operations = OperationService(clock=clock)
    operations.startService()
    finished = start_job(operations, clock)
    finished.core.work.callback("result")
    assert outcome(finished.observe()) == ["result"]
    assert outcome(operations.stopService()) == [None]
    assert clock.getDelayedCalls() == []


def test_cancelling_the_stop_forces_at_once(
    app: tuple[MultiService, OperationService], clock: Clock
) -> None:
    _, operations = app
    stuck = start_job(operations, clock)
    stopping = operations.stopService()
    stopped = outcome(stopping)
    stopping.cancel()  # a second Ctrl-C: stop waiting
    assert stopped == [None]
    assert cancelled_reason(outcome(stuck.observe())[0]).forced
    clock.advance(0)
    assert clock.getDelayedCalls() == []


def test_a_second_stop_waits_for_the_same_operations(
    app: tuple[MultiService, OperationService], clock: Clock
) -> None:
    _, operations = app
    op = start_job(operations, clock)
    first, second = outcome(operations.stopService()), outcome(operations.stopService())
    assert op.core.cancelled == ["work"]  # cancelled once, not forced by the second stop
    assert first == second == [] and op.state == "closing"
    op.core.bye.callback("bye")
    clock.advance(0)
    assert first == second == [None]


# -- operations that arrive while stopping -----------------------------------------


@pytest.mark.parametrize("track_first", [True, False])
def test_operations_tracked_while_stopping_are_cancelled_and_waited_for(
    app: tuple[MultiService, OperationService], clock: Clock, track_first: bool
) -> None:
    _, operations = app
    first = start_job(operations, clock)
    stopped = outcome(operations.stopService())
    # A client that connected just now.  Tracked before it was started, it
    # is cancelled a reactor turn later, so that its start did not raise.
    late = start_job(operations, clock, track_first=track_first)
    if track_first:
        assert late.state == "running"
        clock.advance(0)
    assert late.state == "closing" and late.core.cancelled == ["work"]
    first.core.bye.callback("bye")
    assert stopped == []  # still waiting for the late one
    late.core.bye.callback("bye")
    clock.advance(0)
    assert stopped == [None]
    assert cancelled_reason(outcome(late.observe())[0]).reason == STOPPING


def test_once_the_grace_period_has_run_out_late_operations_are_forced(
    app: tuple[MultiService, OperationService], clock: Clock
) -> None:
    _, operations = app
    stuck = start_job(operations, clock)
    stopped = outcome(operations.stopService())
    late: list[JobOp] = []
    # Forcing the first one completes it; its owner reacts by starting
    # another one (a retry, say), which must not get a grace period of its
    # own.
    stuck.observe().addBoth(lambda _: late.append(start_job(operations, clock)))
    clock.advance(5.0)  # runs the grace timer, then what is due right after
    [op] = late
    assert op.done and cancelled_reason(outcome(op.observe())[0]).forced
    assert stopped == [None]


def test_a_restart_during_a_stop_keeps_new_operations_out_of_it(
    app: tuple[MultiService, OperationService], clock: Clock
) -> None:
    _, operations = app
    stuck = start_job(operations, clock)
    stopped = outcome(operations.stopService())
    operations.startService()
    fresh = start_job(operations, clock)
    assert fresh.state == "running"
    clock.advance(5.0)
    assert stuck.done and stopped == [None]
    assert fresh.state == "running" and operations.operations() == [fresh]


def test_operations_tracked_after_the_stop_are_cancelled(clock: Clock) -> None:
    operations = OperationService(clock=clock)
    operations.startService()
    assert outcome(operations.stopService()) == [None]
    late = start_job(operations, clock, polite=False)
    clock.advance(0)
    assert cancelled_reason(outcome(late.observe())[0]).reason == STOPPING


def test_an_operation_is_never_cancelled_twice(clock: Clock) -> None:
    # A further cancel forces an operation under some cancel semantics:
    # asking once per operation is right under all of them.
    operations = OperationService(clock=clock)
    operations.startService()
    operations.stopService()
    late = start_job(operations, clock, track_first=False)
    assert late.state == "closing"
    stopped = outcome(operations.stopService())
    assert late.state == "closing" and not late.done and stopped == []
    late.core.bye.callback("bye")
    clock.advance(0)
    assert stopped == [None]
    assert not cancelled_reason(outcome(late.observe())[0]).forced


def test_a_restarted_service_accepts_operations_again(clock: Clock) -> None:
    operations = OperationService(clock=clock)
    operations.startService()
    operations.stopService()
    operations.startService()
    op = start_job(operations, clock)
    assert op.state == "running" and operations.operations() == [op]


# -- bookkeeping and mistakes ------------------------------------------------------


def test_completed_operations_are_not_held(clock: Clock) -> None:
    operations = OperationService(clock=clock)
    op = start_job(operations, clock)
    op.core.work.callback("result")
    assert operations.operations() == []
    assert operations.track(op) is op and operations.operations() == []  # done: nothing to track
    ref = weakref.ref(op)
    del op
    gc.collect()
    assert ref() is None


def test_tracking_twice_is_tracking_once(clock: Clock) -> None:
    operations = OperationService(clock=clock)
    op = start_job(operations, clock)
    assert operations.track(op) is op
    assert operations.operations() == [op]


def test_only_operations_can_be_tracked() -> None:
    d: Deferred[None] = Deferred()
    with pytest.raises(TypeError, match=r"track\(\) takes an fsmcancel Operation, not <Deferred"):
        OperationService(clock=Clock()).track(d)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("grace", "error", "message"),
    [
        (-1, ValueError, "must be a finite number >= 0, not -1"),
        (math.inf, ValueError, "must be a finite number >= 0, not inf"),
        (math.nan, ValueError, "must be a finite number >= 0, not nan"),
        ("5s", TypeError, "must be a number, not '5s'"),
        (True, TypeError, "must be a number, not True"),
    ],
)
def test_a_bad_grace_period_is_refused(grace: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(f"OperationService(grace=...) {message}")):
        OperationService(grace=grace, clock=Clock())


# -- any interleaving --------------------------------------------------------------


class ServiceLifecycle(RuleBasedStateMachine):
    """
    Operations tracked, finishing, answering or ignoring a polite close,
    stops, restarts, stop cancellations and the clock, in any order.

    Checked throughout: the service holds exactly the tracked operations
    that have not completed; an operation tracked while the service is
    stopped or stopping is cancelled (never left running); every stop
    Deferred fires once, and exactly when every operation it is waiting for
    has completed; no grace timer outlives its stop.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.service = OperationService(grace=3.0, clock=self.clock)
        self.service.startService()
        self.ops: list[JobOp] = []
        # Each stop: what it fired with so far, and the operations it waits for.
        self.stops: list[tuple[list[object], list[JobOp]]] = []
        self.cancellable: list[Deferred[None]] = []

    def live(self) -> list[JobOp]:
        return [op for op in self.ops if not op.done]

    def stops_in_progress(self) -> list[list[JobOp]]:
        return [w for _, w in self.stops if not all(op.done for op in w)]

    @rule(polite=st.booleans())
    def track(self, polite: bool) -> None:
        op = start_job(self.service, self.clock, polite)
        self.ops.append(op)
        if not self.service.running:
            self.clock.advance(0)  # the cancel of an operation tracked before its start
            assert op.state != "running"
            for waits_for in self.stops_in_progress():
                waits_for.append(op)

    @precondition(lambda self: any(op.state == "running" for op in self.live()))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        running_ops = [op for op in self.live() if op.state == "running"]
        data.draw(st.sampled_from(running_ops)).core.work.callback("result")

    @precondition(lambda self: any(op.state == "closing" for op in self.live()))
    @rule(data=st.data())
    def answer_bye(self, data: st.DataObject) -> None:
        closing_ops = [op for op in self.live() if op.state == "closing"]
        data.draw(st.sampled_from(closing_ops)).core.bye.callback("bye")

    @rule()
    def stop(self) -> None:
        # A stop in progress is joined, but what it still waits for is live.
        waits_for = self.live()
        d = self.service.stopService()
        self.stops.append((outcome(d), waits_for))
        self.cancellable.append(d)
        assert all(op.state != "running" for op in waits_for)

    @rule()
    def restart(self) -> None:
        self.service.startService()

    @precondition(lambda self: bool(self.cancellable))
    @rule()
    def cancel_stop(self) -> None:
        self.cancellable.pop().cancel()

    @rule(seconds=st.sampled_from([0.5, 2.999, 3.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def holds_exactly_the_live_operations(self) -> None:
        assert self.service.operations() == self.live()

    @invariant()
    def each_stop_fires_once_when_what_it_waits_for_is_done(self) -> None:
        # A stop fires one reactor turn after its last operation completed
        # (or at once when cancelled): "due now" on the clock.
        due_now = any(c.getTime() <= self.clock.seconds() for c in self.clock.getDelayedCalls())
        for seen, waits_for in self.stops:
            assert len(seen) <= 1
            if seen:
                assert all(op.done for op in waits_for)
            else:
                assert not all(op.done for op in waits_for) or due_now
        if not self.stops_in_progress():
            assert all(c.getTime() <= self.clock.seconds() for c in self.clock.getDelayedCalls())


ServiceLifecycle.TestCase.settings = settings(max_examples=150, stateful_step_count=30)
test_service_lifecycle = ServiceLifecycle.TestCase
