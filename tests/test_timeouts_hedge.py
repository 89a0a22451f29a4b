"""
Hedged calls: hedge first, kill on evidence.  A backup starts once the
newest attempt has been silent for longer than the hedge delay (before its
first sign of life, or mid-stream); the first attempt keeps running until a
winner is known, so its true latency is observed; the budget caps backups.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from fsmcancel.timeouts import TimedOut
from fsmcancel.timeouts._histogram import bin_of
from tests.test_timeouts_guard import HEDGE, Inputs, Remote, hedged, setup


def launched(remote: Remote) -> list[str]:
    return [args[0] for args, _ in remote.calls]


class TestHedging:
    def test_backup_on_lateness_primary_keeps_running_and_its_late_answer_wins(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        call = hedged(t, op, inputs, remote, ["a", "b", "c"])
        assert launched(remote) == ["a"]
        clock.advance(0.2)  # silent for the (cold) hedge delay: back up on b
        assert launched(remote) == ["a", "b"] and remote.cancelled == []
        clock.advance(0.3)
        remote.calls[0][1].callback("from a")  # the primary was slow, not dead
        assert inputs.events == [("result", "from a")]
        assert (call.winner, call.losers) == ("a", ["b"])
        assert remote.cancelled == [("b", "arg")]
        # a's true latency is observed, not censored; b's wait is censored.
        assert t.estimator("get", "a").latency.events == {bin_of(0.5): 1.0}
        assert t.estimator("get", "b").first.censored == {bin_of(0.3): 1.0}
        assert t.estimator("get", "a").stalls == t.estimator("get", "b").stalls == 0
        assert clock.getDelayedCalls() == [] and op.owned == [] and remote.consumed()

    def test_backup_wins_and_only_then_is_the_primary_cancelled(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        call = hedged(t, op, inputs, remote, ["a", "b", "c"])
        clock.advance(0.2)
        clock.advance(0.05)
        assert remote.cancelled == []
        remote.calls[1][1].callback("from b")
        assert inputs.events == [("result", "from b")]
        assert remote.cancelled == [("a", "arg")] and call.losers == ["a"]
        assert t.estimator("get", "a").first.censored == {bin_of(0.25): 1.0}
        assert clock.getDelayedCalls() == [] and op.owned == [] and call.attempts == 2
        assert remote.consumed()

    def test_mid_stream_silence_starts_a_backup(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        call = hedged(t, op, inputs, remote, ["a", "b"])
        for _ in range(10):  # a streams a chunk every 100 ms...
            clock.advance(0.1)
            call.progress("a")
        assert launched(remote) == ["a"]
        clock.advance(0.199)  # ...then goes quiet
        assert launched(remote) == ["a"]
        clock.advance(0.001)
        assert launched(remote) == ["a", "b"] and remote.cancelled == []
        remote.calls[1][1].callback("from b")
        assert call.winner == "b" and remote.cancelled == [("a", "arg")]
        # a's silence so far is a censored gap, not a stall.
        assert t.estimator("get", "a").gaps.censored == {bin_of(0.2): 1.0}

    def test_hedge_delay_is_learned_from_the_kind(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        for i in range(100):  # first sign of life after 50 ms, from any peer
            call = hedged(t, op, inputs, remote, [f"p{i % 4}", "spare"])
            clock.advance(0.05)
            remote.calls[-1][1].callback("ok")
            del call
        delay = t.explain("get", "new-peer").hedge
        assert delay is not None and delay.seconds == pytest.approx(0.05, rel=0.07)
        assert delay.source == "prior"

    def test_each_attempt_is_killed_only_at_its_own_conservative_limit(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        hedged(t, op, inputs, remote, ["a", "b"])
        clock.advance(0.2)
        assert launched(remote) == ["a", "b"]
        clock.advance(2.7)  # a: 2.9 s of silence, under its 3 s (cold) limit
        assert remote.cancelled == [] and inputs.events == []
        clock.advance(0.1)  # a is killed on evidence; b still may answer
        assert remote.cancelled == [("a", "arg")] and inputs.events == []
        clock.advance(0.2)  # b's own limit: now the caller hears of it, once
        [(kind, timed_out)] = inputs.events
        assert kind == "timeout" and isinstance(timed_out, TimedOut) and timed_out.peer == "b"
        assert clock.getDelayedCalls() == [] and op.owned == []

    def test_fast_primary_needs_no_backup(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        hedged(t, op, inputs, remote, ["a", "b"])
        clock.advance(0.1)
        remote.calls[0][1].callback("from a")
        assert len(remote.calls) == 1 and clock.getDelayedCalls() == []

    def test_budget_respected(self) -> None:
        clock, op, t, inputs, remote = setup(HEDGE)
        rng = random.Random(7)
        for _ in range(200):
            # Answers after 100 ms on average, exponentially: a quarter of
            # calls is slower than the cold hedge delay, 5% than the learned one.
            call = hedged(t, op, inputs, remote, ["a", "b"])
            clock.advance(rng.expovariate(10.0))
            remote.calls[-1][1].callback("x") if not call.done else None
            for _, d in remote.calls:
                if not d.called:
                    d.callback("late")
        backups = len(remote.calls) - 200
        assert backups <= 1 + 0.05 * 200  # burst + budget * calls
        assert backups >= 5
        assert clock.getDelayedCalls() == [] and op.owned == []
        assert t.budget("get", t.rule("get", "a").hedge).backups == backups

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


def test_no_peers_refused() -> None:
    clock, op, t, inputs, remote = setup(HEDGE)
    with pytest.raises(ValueError, match="at least one peer"):
        hedged(t, op, inputs, remote, [])
    assert clock.getDelayedCalls() == []


class TestHealthUnderHedging:
    """
    A call that hedging rescued still tells about the peer that was silent:
    otherwise a dead peer whose calls are always answered by a backup would
    never be marked suspect nor ranked down, and every call sent to it first
    would need a backup, until the budget ran out and its calls waited for
    their kill limit.
    """

    BUDGET = {"kinds": {"get": {"policy": "hedge", "hedge": {"initial": "200ms", "burst": 50}}}}

    def rescue(self, t: Any, op: Any, clock: Any, remote: Remote, peers: list[str]) -> Any:
        call = hedged(t, op, Inputs(), remote, peers)
        clock.advance(0.2)  # the first peer is silent: a backup goes to the second
        remote.calls[-1][1].callback("from the backup")
        return call

    def test_a_dead_peer_that_backups_always_rescue_becomes_suspect_and_is_probed(self) -> None:
        clock, op, t, _, remote = setup(self.BUDGET)
        assert self.rescue(t, op, clock, remote, ["dead", "alive"]).losers == ["dead"]
        assert t.health("dead").state == "healthy" and t.health("dead").strikes == 1
        self.rescue(t, op, clock, remote, ["dead", "alive"])
        status = t.health("dead")
        assert status.state == "suspect" and status.stalls == 0  # never given up: no stall
        assert t.rank("get", ["dead", "alive"]) == ["alive", "dead"]
        # Probed later; the probe rescued again is a failed probe: the next
        # one is further off.
        clock.advance(10)
        assert t.rank("get", ["dead", "alive"]) == ["dead", "alive"]
        self.rescue(t, op, clock, remote, ["dead", "alive"])
        status = t.health("dead")
        assert status.failed_probes == 1 and status.probe_in == pytest.approx(20.0)
        assert clock.getDelayedCalls() == [] and op.owned == [] and remote.consumed()

    def test_a_peer_bypassed_mid_stream_call_after_call_is_ranked_down(self) -> None:
        clock, op, t, _, remote = setup(self.BUDGET)
        for calls in range(1, 11):
            call = hedged(t, op, Inputs(), remote, ["stuck", "fine"])
            clock.advance(0.05)
            call.progress("stuck")  # alive: a first chunk...
            clock.advance(0.25)  # ...then silence past the hedge delay
            assert launched(remote)[-2:] == ["stuck", "fine"]
            remote.calls[-1][1].callback("from fine")
            status = t.health("stuck")
            assert status.state == "healthy" and status.strikes == 0 and status.stalls == 0
            if calls == 1:  # once is bad luck: a silence of a twelfth of its 3 s limit
                assert t.rank("get", ["stuck", "fine"]) == ["stuck", "fine"]
        assert status.recent_stalls == pytest.approx(0.25 / 3 * (1 - 0.95**10), rel=0.01)
        assert t.rank("get", ["stuck", "fine"]) == ["fine", "stuck"]

    def test_losing_without_having_been_late_tells_nothing(self) -> None:
        clock, op, t, _, remote = setup(self.BUDGET)
        hedged(t, op, Inputs(), remote, ["slow", "backup"])
        clock.advance(0.2)  # a backup starts...
        clock.advance(0.05)
        remote.calls[0][1].callback("from slow")  # ...and the slow primary wins
        for peer in ("slow", "backup"):
            status = t.health(peer)
            assert status.strikes == 0 and status.recent_stalls == 0, status
        assert t.rank("get", ["backup", "slow"]) == ["backup", "slow"]
