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
from fsmcancel.timeouts._histogram import bin_of, upper


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
        Timeouts(load_config(env={}, data=data or {}), clock=clock),
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


def warm_gaps(t: Timeouts, gap: float = 1.0, n: int = 400) -> None:
    for _ in range(n):
        t.estimator("get", "p1").gap(gap)


def limit_for(seconds: float, multiplier: float = 3.5) -> float:
    """The learned limit when every observation was ``seconds``: the bin's
    upper edge (quantiles err on the side of waiting) times the multiplier."""
    return upper(bin_of(seconds)) * multiplier


class TestGuardedCall:
    def test_result_disarms_and_releases(self) -> None:
        clock, op, t, inputs, remote = setup()
        start(t, op, inputs, remote)
        assert len(clock.getDelayedCalls()) == 1 and len(op.owned) == 1
        clock.advance(0.2)
        remote.calls[0][1].callback("data")
        assert inputs.events == [("result", "data")]
        assert clock.getDelayedCalls() == [] and op.owned == []
        est = t.estimator("get", "p1")
        assert est.latency.events == {bin_of(0.2): 1.0} and est.first.events == {bin_of(0.2): 1.0}
        assert t.health("p1").state == "healthy"

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
        clock.advance(2.999)
        assert inputs.events == []
        clock.advance(0.001)
        [(_, timed_out)] = inputs.events
        assert timed_out == TimedOut("get", "p1", 3.0, "idle", 3.0)
        assert remote.cancelled == [("arg",)]
        assert clock.getDelayedCalls() == [] and op.owned == []
        assert remote.consumed()

    def test_silent_stall_detected_within_learned_limit(self) -> None:
        clock, op, t, inputs, remote = setup()
        call = start(t, op, inputs, remote)
        for _ in range(30):  # alive: a PONG every second, learned as we go
            clock.advance(1.0)
            call.progress()
        bound = t.explain("get", "p1").silence.seconds
        assert bound == pytest.approx(limit_for(1.0))
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
        clock.advance(limit_for(1.0) - 0.6)
        assert inputs.events == []
        clock.pump([0.1] * 10)
        [(_, timed_out)] = inputs.events
        assert isinstance(timed_out, TimedOut)
        assert timed_out.waited == pytest.approx(1.5 + limit_for(1.0), abs=0.1)

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

    def test_think_time_is_not_judged_by_the_chunk_gaps(self) -> None:
        # Chunks arrive 20 ms apart, so the gap model allows 1 s (idle.min) of
        # silence; a server that thinks 2.5 s before its first byte is not
        # stalled: that silence is judged by the first-sign limit (cold: 5 s).
        clock, op, t, inputs, remote = setup()
        warm_gaps(t, gap=0.02)
        assert t.explain("get", "p1").silence.seconds == 1.0
        call = start(t, op, inputs, remote)
        clock.advance(2.5)
        call.progress()
        for _ in range(10):
            clock.advance(0.02)
            call.progress()
        remote.calls[-1][1].callback("ok")
        assert inputs.events == [("result", "ok")]

    def test_fast_streams_train_the_gap_model(self) -> None:
        # Chunks 5 ms apart: every gap is learned (none merged away), and the
        # learned limit follows them down to idle.min.
        clock, op, t, inputs, remote = setup({"default": {"idle": {"min": "10ms"}}})
        for _ in range(20):
            call = start(t, op, inputs, remote)
            for _ in range(100):
                clock.advance(0.005)
                call.progress()
            remote.calls[-1][1].callback("ok")
        est = t.estimator("get", "p1")
        assert est.gaps.seen == 20 * 99 and list(est.gaps.events) == [bin_of(0.005)]
        assert t.explain("get", "p1").silence.seconds == pytest.approx(limit_for(0.005))
        assert t.explain("get", "p1").silence.source == "learned"

    def test_the_silence_before_the_answer_teaches_the_gap_model(self) -> None:
        # A peer whose calls got slower shows it first in the silences its
        # calls survive before answering.  Learned like gaps between chunks,
        # they raise the limit before a longer silence mid-stream is killed.
        clock, op, t, inputs, remote = setup()
        warm_gaps(t, gap=0.5)
        assert t.explain("get", "p1").silence.seconds == pytest.approx(limit_for(0.5))
        for _ in range(400):
            call = start(t, op, inputs, remote)
            clock.advance(0.1)
            call.progress()
            clock.advance(1.5)  # survived: under the 1.8 s limit
            remote.calls[-1][1].callback("ok")
        assert t.explain("get", "p1").silence.seconds == pytest.approx(limit_for(1.5))
        inputs.events.clear()
        call = start(t, op, inputs, remote)
        clock.advance(0.1)
        call.progress()
        clock.advance(4.0)  # would have been a stall under the old limit
        remote.calls[-1][1].callback("ok")
        assert inputs.events == [("result", "ok")]

    def test_first_sign_limit_learns_and_first_progress_tightens(self) -> None:
        clock, op, t, inputs, remote = setup()
        for _ in range(400):  # first byte after 0.5 s, every time
            call = start(t, op, inputs, remote)
            clock.advance(0.5)
            call.progress()
            remote.calls[-1][1].callback("ok")
        learned = t.explain("get", "p1").first_sign
        assert learned.seconds == pytest.approx(limit_for(0.5)) and learned.source == "learned"
        warm_gaps(t, gap=0.3)  # the gap model allows 1.1 s
        call = start(t, op, inputs, remote)
        clock.advance(0.5)
        call.progress()  # now the gap model rules, re-armed at once
        inputs.events.clear()
        clock.pump([0.1] * 40)
        [(_, timed_out)] = inputs.events
        assert isinstance(timed_out, TimedOut) and timed_out.rule == "idle"
        assert timed_out.limit == pytest.approx(limit_for(0.3))
        assert timed_out.waited == pytest.approx(0.5 + timed_out.limit, abs=0.11)

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
        # A cancelled call is a censored live call, not a stall.
        est = t.estimator("get", "p1")
        assert est.stalls == 0 and est.first.censored == {bin_of(1.0): 1.0}
        assert t.health("p1").strikes == 0

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


OUTCOMES = st.sampled_from(
    ["result", "failure", "stall", "progress", "leave", "advance", "call", "rank"]
)


@settings(max_examples=300, deadline=None)
@given(
    script=st.lists(st.tuples(st.integers(0, 3), OUTCOMES), max_size=40),
    hedge=st.booleans(),
)
def test_no_timer_left_armed(script: list[tuple[int, str]], hedge: bool) -> None:
    """
    Whatever happens to concurrent calls to a few peers (answers, failures,
    progress, stalls that make peers suspect and tighten the calls in
    flight, probes claimed by rank, hedges, the state left), once each has
    ended no timer is left armed, nothing is still owned, no call is
    reported twice, no failure is left unconsumed, and health forgets
    every finished call.
    """
    clock, op, t, inputs, remote = setup(
        {**(HEDGE if hedge else {}), "default": {"health": {"probe_interval": "1s"}}}
    )
    peers = ["a", "b", "c"]

    def begin(i: int) -> Any:
        if hedge:
            return hedged(t, op, inputs, remote, [peers[i % 3], peers[(i + 1) % 3]])
        return start(t, op, inputs, remote, peer=peers[i % 3])

    calls = [begin(i) for i in range(4)]
    for index, outcome in script:
        pending = [d for _, d in remote.calls if not d.called]
        if outcome == "result" and pending:
            pending[index % len(pending)].callback("ok")
        elif outcome == "failure" and pending:
            pending[index % len(pending)].errback(ConnectionRefusedError())
        elif outcome == "progress":
            call = calls[index % len(calls)]
            if hedge:
                call.progress(peers[index % 3])
            else:
                call.progress()
        elif outcome == "advance":
            clock.advance(0.5 * (index + 1))
        elif outcome == "stall":
            clock.advance(60)
        elif outcome == "leave":
            op.leave()
        elif outcome == "call":
            calls.append(begin(index))
        elif outcome == "rank":
            assert sorted(t.rank("get", peers)) == peers
    clock.pump([1.0] * 1000)  # every remaining call times out
    assert clock.getDelayedCalls() == []
    assert op.owned == []
    assert len(inputs.events) <= len(calls)
    assert all(c.done for c in calls)
    assert remote.consumed()
    assert all(not t._health(p).inflight for p in peers)
