"""
Guarded and hedged calls under ``task.Clock``, with a stand-in for the
operation (a double of *our* ``own``/``release``/``clock`` API, never of
Twisted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError, DNSLookupError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseNeverReceived

from fsmcancel.timeouts import TimedOut, Timeouts, load_config


class StandInOperation:
    """Just the part of fsmcancel's Operation a guarded call uses."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.owned: list[tuple[object, Callable[[Any], object]]] = []

    def own(
        self, resource: Any, release: Callable[[Any], object], *, name: str | None = None
    ) -> Any:
        self.owned.append((resource, release))
        return resource

    def release(self, resource: object) -> None:
        for i, (obj, release) in enumerate(self.owned):
            if obj is resource:
                del self.owned[i]
                release(obj)
                return
        raise ValueError(f"{resource!r} not owned")

    def leave(self) -> None:
        """Leave the state: release everything, newest first."""
        while self.owned:
            obj, release = self.owned.pop()
            release(obj)


class Inputs:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def result(self, value: object) -> None:
        self.events.append(("result", value))

    def failure(self, f: Failure) -> None:
        self.events.append(("failure", f.type))

    def timed_out(self, t: TimedOut) -> None:
        self.events.append(("timeout", t))


class Remote:
    """Deferreds handed out by a fake remote call, and their cancellations."""

    def __init__(self, cancel_error: type[Exception] | None = None) -> None:
        self.calls: list[tuple[tuple[Any, ...], Deferred[str]]] = []
        self.cancelled: list[tuple[Any, ...]] = []
        self.cancel_error = cancel_error
        self.outcomes: list[object] = []

    def __call__(self, *args: Any) -> Deferred[str]:
        def canceller(d: Deferred[str]) -> None:
            self.cancelled.append(args)
            if self.cancel_error is not None:
                d.errback(self.cancel_error())

        d: Deferred[str] = Deferred(canceller)
        self.calls.append((args, d))
        return d

    def consumed(self) -> bool:
        """Every Deferred ended with nothing left for 'Unhandled error'."""
        results: list[object] = []
        for _, d in self.calls:
            d.addBoth(results.append)
        return all(r is None or isinstance(r, str) for r in results)


def setup(
    data: dict[str, Any] | None = None,
) -> tuple[Clock, StandInOperation, Timeouts, Inputs, Remote]:
    clock = Clock()
    return (
        clock,
        StandInOperation(clock),
        Timeouts(load_config(env={}, data=data or {})),
        Inputs(),
        Remote(),
    )


def start(t: Timeouts, op: StandInOperation, inputs: Inputs, remote: Remote, **kw: Any) -> Any:
    return t.call(
        op,
        remote,
        "arg",
        kind=kw.pop("kind", "get"),
        peer=kw.pop("peer", "p1"),
        on_result=inputs.result,
        on_failure=inputs.failure,
        on_timeout=inputs.timed_out,
    )


def warm_gaps(t: Timeouts, gap: float = 1.0, n: int = 50) -> None:
    for _ in range(n):
        t.estimator("get", "p1").gaps.observe(gap)


class TestGuardedCall:
    def test_result_disarms_and_releases(self) -> None:
        clock, op, t, inputs, remote = setup()
        start(t, op, inputs, remote)
        assert len(clock.getDelayedCalls()) == 1 and len(op.owned) == 1
        clock.advance(0.2)
        remote.calls[0][1].callback("data")
        assert inputs.events == [("result", "data")]
        assert clock.getDelayedCalls() == [] and op.owned == []
        assert t.estimator("get", "p1").latency.export() == [[pytest.approx(0.2), 0.0]]

    def test_failure_disarms(self) -> None:
        clock, op, t, inputs, remote = setup()
        start(t, op, inputs, remote)
        remote.calls[0][1].errback(ConnectionRefusedError())
        assert inputs.events == [("failure", ConnectionRefusedError)]
        assert clock.getDelayedCalls() == [] and op.owned == []

    def test_synchronous_outcomes(self) -> None:
        clock, op, t, inputs, _ = setup()

        def boom(_: str) -> Deferred[str]:
            raise ValueError("sync")

        t.call(op, boom, "x", kind="get", peer="p", on_result=inputs.result,
               on_failure=inputs.failure, on_timeout=inputs.timed_out)  # fmt: skip
        from twisted.internet.defer import succeed

        t.call(op, lambda: succeed("now"), kind="get", peer="p", on_result=inputs.result,
               on_failure=inputs.failure, on_timeout=inputs.timed_out)  # fmt: skip
        assert inputs.events == [("failure", ValueError), ("result", "now")]
        assert clock.getDelayedCalls() == [] and op.owned == []

    def test_cold_start_idle_timeout(self) -> None:
        clock, op, t, inputs, remote = setup()
        start(t, op, inputs, remote)
        clock.advance(4.999)
        assert inputs.events == []
        clock.advance(0.001)
        [(_, timed_out)] = inputs.events
        assert timed_out == TimedOut("get", "p1", 5.0, "idle", 5.0)
        assert remote.cancelled == [("arg",)]
        assert clock.getDelayedCalls() == [] and op.owned == []
        assert remote.consumed()

    def test_silent_stall_detected_within_adaptive_bound(self) -> None:
        clock, op, t, inputs, remote = setup()
        call = start(t, op, inputs, remote)
        for _ in range(30):  # alive: a PONG every second, learned as we go
            clock.advance(1.0)
            call.progress()
        bound = t.estimator("get", "p1").idle_timeout(t.rule("get", "p1"))
        assert bound == pytest.approx(1.0 + 1.0 + 5.612 * 0.1, abs=0.01)
        clock.advance(bound - 0.01)  # the host vanishes: silence
        assert inputs.events == []
        clock.advance(0.01)
        [(_, timed_out)] = inputs.events
        assert isinstance(timed_out, TimedOut) and timed_out.rule == "idle"
        assert timed_out.waited == pytest.approx(30 + bound)
        assert clock.getDelayedCalls() == []

    def test_slow_call_with_progress_never_times_out(self) -> None:
        clock, op, t, inputs, remote = setup({"default": {"deadline": {"max": "1h"}}})
        warm_gaps(t)
        call = start(t, op, inputs, remote)
        for i in range(20 * 60):  # twenty minutes, a chunk every ~second
            clock.advance(0.9 if i % 2 else 1.1)
            call.progress()
        assert inputs.events == []
        assert len(clock.getDelayedCalls()) == 1  # one timer, re-armed lazily
        remote.calls[0][1].callback("big")
        assert inputs.events == [("result", "big")]
        assert clock.getDelayedCalls() == []

    def test_progress_timestamp(self) -> None:
        clock, op, t, inputs, remote = setup()
        warm_gaps(t)
        call = start(t, op, inputs, remote)
        clock.advance(2.0)
        call.progress(at=1.5)  # e.g. getDataLastReceivedAt()
        call.progress(at=1.0)  # stale: ignored
        clock.advance(1.5)
        assert inputs.events == []
        clock.pump([0.1] * 10)
        [(_, timed_out)] = inputs.events
        assert isinstance(timed_out, TimedOut)
        assert timed_out.waited == pytest.approx(1.5 + 2.5612, abs=0.1)

    def test_whole_call_deadline(self) -> None:
        clock, op, t, inputs, remote = setup({"default": {"policy": "fixed"}})
        call = start(t, op, inputs, remote)
        for _ in range(9):
            clock.advance(1.0)
            call.progress()  # progress does not matter to a deadline
        clock.advance(1.0)
        [(_, timed_out)] = inputs.events
        assert isinstance(timed_out, TimedOut)
        assert (timed_out.rule, timed_out.limit) == ("deadline", 10.0)

    def test_idle_policy_keeps_hard_limit(self) -> None:
        clock, op, t, inputs, remote = setup({"default": {"deadline": {"max": "30s"}}})
        warm_gaps(t)
        call = start(t, op, inputs, remote)
        for _ in range(40):
            clock.advance(1.0)
            call.progress()
        [(_, timed_out)] = inputs.events
        assert isinstance(timed_out, TimedOut) and timed_out.rule == "deadline"
        assert timed_out.waited == pytest.approx(30.0)

    def test_backoff_after_consecutive_timeouts(self) -> None:
        clock, op, t, inputs, remote = setup()
        waits = []
        for _ in range(4):
            start(t, op, inputs, remote)
            clock.pump([0.5] * 200)
            timed_out = inputs.events.pop()[1]
            assert isinstance(timed_out, TimedOut)
            waits.append(timed_out.waited)
        assert waits == [5.0, 10.0, 20.0, 30.0]
        start(t, op, inputs, remote)
        remote.calls[-1][1].callback("ok")
        start(t, op, inputs, remote)
        clock.pump([0.5] * 200)
        assert inputs.events[-1][1] == TimedOut("get", "p1", 5.0, "idle", 5.0)

    def test_think_time_is_not_judged_by_the_chunk_gaps(self) -> None:
        # Chunks arrive 20 ms apart, so the gap model allows ~1.6 s of silence;
        # a server that thinks 2.5 s before its first byte is not stalled.
        clock, op, t, inputs, remote = setup()
        warm_gaps(t, gap=0.02)
        assert t.estimator("get", "p1").idle_timeout(t.config.rule("get", "p1")) < 2.5
        call = start(t, op, inputs, remote)
        clock.advance(2.5)
        call.progress()
        for _ in range(10):
            clock.advance(0.02)
            call.progress()
        remote.calls[-1][1].callback("ok")
        assert inputs.events == [("result", "ok")]

    def test_a_peer_that_never_answers_is_caught_by_the_first_sign_allowance(self) -> None:
        clock, op, t, inputs, remote = setup()
        warm_gaps(t, gap=0.02)
        start(t, op, inputs, remote)
        clock.pump([0.25] * 40)
        [(_, timed_out)] = inputs.events
        assert timed_out == TimedOut("get", "p1", 5.0, "idle", 5.0)  # idle.initial, cold

    def test_first_sign_allowance_learns_and_first_progress_tightens(self) -> None:
        clock, op, t, inputs, remote = setup(
            {"default": {"deadline": {"quantile": 0.9, "multiplier": 2.0}}}
        )
        rule = t.config.rule("get", "p1")
        for _ in range(30):  # first byte after 0.5 s, every time
            call = start(t, op, inputs, remote)
            clock.advance(0.5)
            call.progress()
            remote.calls[-1][1].callback("ok")
        learned = t.estimator("get", "p1").first_progress_timeout(rule)
        assert learned == pytest.approx(1.0)  # p90 (0.5 s) x 2, within idle 1s..30s
        warm_gaps(t, gap=1.0)
        call = start(t, op, inputs, remote)
        clock.advance(0.5)
        call.progress()  # now the gap model (~2.3 s) rules, re-armed at once
        inputs.events.clear()
        clock.pump([0.1] * 40)
        [(_, timed_out)] = inputs.events
        assert isinstance(timed_out, TimedOut) and timed_out.rule == "idle"
        assert timed_out.waited == pytest.approx(0.5 + timed_out.limit, abs=0.11)

    def test_a_cold_peer_slower_than_initial_is_learned_not_stalled_forever(self) -> None:
        # Headers take 3 s, the cold deadline is 2 s: the first call times
        # out, backoff lets the next one finish, and from then on the
        # deadline is never below what that call proved is needed.
        clock, op, t, inputs, remote = setup(
            {"default": {"policy": "deadline", "deadline": {"initial": "2s"}}}
        )
        for _ in range(15):
            start(t, op, inputs, remote)
            clock.advance(3.0)
            if not remote.calls[-1][1].called:
                remote.calls[-1][1].callback("slow but fine")
            clock.advance(1.0)
        kinds = [kind for kind, _ in inputs.events]
        assert kinds[0] == "timeout" and set(kinds[1:]) == {"result"}, kinds

    def test_a_cold_peer_with_slow_chunks_is_learned_not_stalled_forever(self) -> None:
        # Chunks every 2.5 s, the cold idle timeout is 2 s.
        clock, op, t, inputs, remote = setup({"default": {"idle": {"initial": "2s"}}})
        for _ in range(10):
            call = start(t, op, inputs, remote)
            for _ in range(4):
                clock.advance(2.5)
                call.progress()
            if not remote.calls[-1][1].called:
                remote.calls[-1][1].callback("slow but fine")
            clock.advance(1.0)
        kinds = [kind for kind, _ in inputs.events]
        assert kinds.count("timeout") <= 1 and kinds[-8:] == ["result"] * 8, kinds

    def test_backoff_is_fixed_when_a_call_starts(self) -> None:
        # Four calls to one peer stall together: each is detected at the
        # limit it started with, not stretched by the others' timeouts.
        clock, op, t, inputs, remote = setup()
        for _ in range(4):
            start(t, op, inputs, remote)
        clock.pump([0.5] * 20)
        waits = [e[1].waited for e in inputs.events if isinstance(e[1], TimedOut)]
        assert waits == [5.0, 5.0, 5.0, 5.0]
        start(t, op, inputs, remote)  # a call started after them does back off:
        clock.pump([0.5] * 80)  # 5 s x 2**4, capped at idle.max (30 s)
        assert inputs.events[-1][1] == TimedOut("get", "p1", 30.0, "idle", 30.0)

    def test_leaving_the_state_cancels_and_suppresses(self) -> None:
        clock, op, t, inputs, remote = setup()
        start(t, op, inputs, remote)
        clock.advance(1.0)
        op.leave()
        assert remote.cancelled == [("arg",)]
        remote.calls[0][1].callback("late") if not remote.calls[0][1].called else None
        clock.advance(100)
        assert inputs.events == [] and clock.getDelayedCalls() == []
        assert remote.consumed()
        # A cancelled call is censored, not a timeout: no backoff.
        assert t.estimator("get", "p1").timeouts == 0

    @pytest.mark.parametrize(
        "error",
        [
            CancelledError,
            lambda: ConnectingCancelledError(object()),
            DNSLookupError,
            lambda: ResponseNeverReceived([Failure(CancelledError())]),
        ],
    )
    def test_cancel_failures_are_consumed(self, error: Any) -> None:
        clock, op, t, inputs, _ = setup()
        remote = Remote(cancel_error=error)
        start(t, op, inputs, remote)
        clock.advance(10)
        assert [e[0] for e in inputs.events] == ["timeout"]
        assert remote.consumed()
        start(t, op, inputs, remote)
        op.leave()
        assert remote.consumed() and len(inputs.events) == 1


def hedged(
    t: Timeouts, op: StandInOperation, inputs: Inputs, remote: Remote, peers: list[str]
) -> Any:
    return t.hedged(
        op,
        remote,
        "arg",
        kind="get",
        peers=peers,
        on_result=inputs.result,
        on_failure=inputs.failure,
        on_timeout=inputs.timed_out,
    )


HEDGE = {"kinds": {"get": {"policy": "hedge", "hedge": {"initial": "200ms", "burst": 1}}}}


class TestHedging:
    def test_backup_wins_loser_cancelled(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        call = hedged(t, op, inputs, remote, ["a", "b", "c"])
        assert [args for args, _ in remote.calls] == [("a", "arg")]
        clock.advance(0.2)
        assert [args for args, _ in remote.calls] == [("a", "arg"), ("b", "arg")]
        remote.calls[1][1].callback("from b")
        assert inputs.events == [("result", "from b")]
        assert remote.cancelled == [("a", "arg")]
        assert clock.getDelayedCalls() == [] and op.owned == [] and call.attempts == 2
        assert remote.consumed()
        # the loser is censored at 0.2 s, the winner observed: no timeout
        assert t.estimator("get", "a").latency.export() == [[pytest.approx(0.2), 1.0]]
        assert t.estimator("get", "b").latency.export() == [[0.0, 0.0]]

    def test_fast_primary_needs_no_backup(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        hedged(t, op, inputs, remote, ["a", "b"])
        clock.advance(0.1)
        remote.calls[0][1].callback("from a")
        assert len(remote.calls) == 1 and clock.getDelayedCalls() == []

    def test_budget_respected(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        for _ in range(100):
            hedged(t, op, inputs, remote, ["a", "b"])
            clock.advance(0.3)
            remote.calls[-1][1].callback("x")
        backups = len(remote.calls) - 100
        assert backups <= 1 + 0.05 * 100  # burst + budget * calls
        assert backups >= 5
        assert clock.getDelayedCalls() == [] and op.owned == []
        budget = t.budget("get", t.rule("get", "a").hedge)
        assert budget.backups == backups

    def test_not_hedged_under_other_policies(self) -> None:
        clock, op, t, inputs, remote = setup()
        hedged(t, op, inputs, remote, ["a", "b"])
        clock.advance(3)
        assert len(remote.calls) == 1

    def test_all_attempts_fail(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        hedged(t, op, inputs, remote, ["a", "b"])
        clock.advance(0.2)
        remote.calls[0][1].errback(ConnectionRefusedError())
        assert inputs.events == []  # b may still answer
        clock.advance(100)
        assert [e[0] for e in inputs.events] == ["timeout"]
        assert clock.getDelayedCalls() == [] and op.owned == []

    def test_leaving_cancels_every_attempt(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        hedged(t, op, inputs, remote, ["a", "b"])
        clock.advance(0.2)
        op.leave()
        assert sorted(remote.cancelled) == [("a", "arg"), ("b", "arg")]
        assert clock.getDelayedCalls() == [] and inputs.events == []
        assert remote.consumed()


OUTCOMES = st.sampled_from(["result", "failure", "stall", "progress", "leave", "advance"])


@settings(max_examples=200, deadline=None)
@given(
    script=st.lists(st.tuples(st.integers(0, 3), OUTCOMES), max_size=30),
    hedge=st.booleans(),
)
def test_no_timer_left_armed(script: list[tuple[int, str]], hedge: bool) -> None:
    """
    Whatever happens to up to four concurrent calls, once each has ended no
    timer is left armed, nothing is still owned, nothing is reported twice,
    and no failure is left unconsumed.
    """
    clock, op, t, inputs, remote = setup(HEDGE if hedge else None)
    calls = [
        hedged(t, op, inputs, remote, ["a", "b"]) if hedge else start(t, op, inputs, remote)
        for _ in range(4)
    ]
    for index, outcome in script:
        pending = [d for _, d in remote.calls if not d.called]
        if outcome == "result" and pending:
            pending[index % len(pending)].callback("ok")
        elif outcome == "failure" and pending:
            pending[index % len(pending)].errback(ConnectionRefusedError())
        elif outcome == "progress" and not hedge:
            calls[index].progress()
        elif outcome == "advance":
            clock.advance(0.5 * (index + 1))
        elif outcome == "stall":
            clock.advance(60)
        elif outcome == "leave":
            op.leave()
    clock.pump([1.0] * 1000)  # every remaining call times out
    assert clock.getDelayedCalls() == []
    assert op.owned == []
    assert len(inputs.events) <= 4
    assert all(c.done for c in calls)
    assert remote.consumed()
