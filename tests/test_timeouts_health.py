"""
Peer health: a dead peer is detected no slower on later calls than on the
first (also when its calls stall together), is marked suspect and ranked
last, is probed later and revived by a sign of life; a peer slower than its
kind is learned by a generous probe or an exploratory call, not timed out
forever.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from fsmcancel.timeouts import TimedOut, Timeouts
from tests.test_timeouts_guard import Inputs, Remote, StandInOperation, limit_for, setup

HEALTH = {"default": {"health": {"probe_interval": "10s", "probe_max": "40s"}}}


def call(t: Timeouts, op: StandInOperation, inputs: Inputs, remote: Remote, peer: str) -> Any:
    return t.call(op, remote, peer, kind="get", peer=peer, on_result=inputs.result,
                  on_failure=inputs.failure, on_timeout=inputs.timed_out)  # fmt: skip


def warm(clock: Clock, t: Timeouts, op: StandInOperation, remote: Remote, first: float = 0.3,
         peers: tuple[str, ...] = ("a", "b", "c"), n: int = 400) -> None:  # fmt: skip
    """Calls to ``peers`` that each answer ``first`` seconds after the request."""
    inputs = Inputs()
    for i in range(n):
        call(t, op, inputs, remote, peers[i % len(peers)])
        clock.advance(first)
        remote.calls[-1][1].callback("ok")
    assert [kind for kind, _ in inputs.events] == ["result"] * n


def stall(clock: Clock, t: Timeouts, op: StandInOperation, remote: Remote, peer: str) -> TimedOut:
    inputs = Inputs()
    call(t, op, inputs, remote, peer)
    while not inputs.events:
        clock.advance(0.01)
    [(kind, timed_out)] = inputs.events
    assert kind == "timeout" and isinstance(timed_out, TimedOut)
    return timed_out


def test_a_new_peer_of_a_known_kind_is_judged_by_the_kinds_limit_on_its_first_call() -> None:
    clock, op, t, _, remote = setup(HEALTH)
    warm(clock, t, op, remote)  # peers a, b, c answer after 0.3 s
    first = stall(clock, t, op, remote, "new")  # its very first call
    assert first.limit == pytest.approx(limit_for(0.3))
    assert first.limit < t.rule("get", "new").idle.initial / 2


class TestDeadPeers:
    def test_detected_no_slower_on_later_calls_than_on_the_first(self) -> None:
        clock, op, t, _, remote = setup(HEALTH)
        warm(clock, t, op, remote)
        waits = [stall(clock, t, op, remote, "a").waited for _ in range(10)]
        assert waits[0] == pytest.approx(limit_for(0.3), abs=0.011)
        assert all(w <= waits[0] + 1e-9 for w in waits[1:]), waits

    def test_concurrent_stalls_are_each_detected_at_the_same_limit(self) -> None:
        clock, op, t, inputs, remote = setup(HEALTH)
        warm(clock, t, op, remote)
        for _ in range(6):  # six calls to the dead peer at once
            call(t, op, inputs, remote, "a")
        clock.pump([0.01] * 1000)
        waits = [e[1].waited for e in inputs.events if isinstance(e[1], TimedOut)]
        assert len(waits) == 6 and max(waits) == pytest.approx(min(waits))
        assert waits[0] == pytest.approx(limit_for(0.3), abs=0.011)

    def test_calls_in_flight_when_it_dies_are_judged_by_the_same_limit(self) -> None:
        clock, op, t, inputs, remote = setup(HEALTH)
        warm(clock, t, op, remote)  # first sign after 0.3 s: limit 1.1 s
        for _ in range(400):
            t.estimator("get", "a").gap(1.0)  # chunks 1 s apart: gap limit 3.7 s
        streaming = call(t, op, inputs, remote, "a")
        clock.advance(0.5)
        streaming.progress()
        clock.advance(0.5)
        streaming.progress()  # ...and then the peer dies
        call(t, op, inputs, remote, "a")
        while len(inputs.events) < 2:
            clock.advance(0.01)
        waits = sorted(e[1].waited for e in inputs.events if isinstance(e[1], TimedOut))
        # The new call stalls silently at its 1.1 s; from then on the call in
        # flight is judged by that limit too: dead for 1.1 s, it is given up
        # at once, not 3.7 s after its last chunk.
        assert waits == pytest.approx([limit_for(0.3), 1.0 + limit_for(0.3)], abs=0.011)
        assert clock.getDelayedCalls() == [] and op.owned == []

    def test_marked_suspect_and_ranked_last(self) -> None:
        clock, op, t, _, remote = setup(HEALTH)
        warm(clock, t, op, remote)
        stall(clock, t, op, remote, "a")
        # One stall: still healthy, but tried after the peers that did not stall.
        assert t.health("a").state == "healthy" and t.health("a").strikes == 1
        assert t.rank("get", ["a", "b", "c"]) == ["b", "c", "a"]
        stall(clock, t, op, remote, "a")
        assert t.health("a").state == "suspect"
        assert t.rank("get", ["a", "b", "c"]) == ["b", "c", "a"]
        assert t.health("b").state == "healthy" and t.health("zzz").state == "unknown"

    def test_probed_later_and_revived_by_a_sign_of_life(self) -> None:
        clock, op, t, inputs, remote = setup(HEALTH)
        warm(clock, t, op, remote)
        stall(clock, t, op, remote, "a")
        stall(clock, t, op, remote, "a")
        assert t.health("a").probe_in == pytest.approx(10.0)
        clock.advance(10.0)
        assert t.health("a").state == "probe due"
        assert t.rank("get", ["b", "a", "c"]) == ["a", "b", "c"]  # one caller probes
        assert t.rank("get", ["b", "a", "c"]) == ["b", "c", "a"]  # the others steer away
        # The probe of a peer seen alive before gets the usual limit.
        explained = t.explain("get", "a").first_sign
        assert explained.source == "probe" and explained.seconds == pytest.approx(limit_for(0.3))
        probe = call(t, op, inputs, remote, "a")
        assert t.health("a").state == "probing"
        clock.advance(0.2)
        probe.progress()  # it is back
        assert t.health("a").state == "healthy" and t.health("a").strikes == 0
        # Revived: ahead of a suspect peer, behind those with fewer recent stalls.
        stall(clock, t, op, remote, "d")
        stall(clock, t, op, remote, "d")
        assert t.rank("get", ["d", "a", "b"]) == ["b", "a", "d"]

    def test_a_probe_that_stalls_backs_the_next_probe_off(self) -> None:
        clock, op, t, _, remote = setup(HEALTH)
        warm(clock, t, op, remote)
        first = stall(clock, t, op, remote, "a").waited
        stall(clock, t, op, remote, "a")
        intervals = []
        for _ in range(4):
            clock.advance(t.health("a").probe_in or 0.0)
            assert t.rank("get", ["b", "a"])[0] == "a"
            assert stall(clock, t, op, remote, "a").waited == pytest.approx(first)
            intervals.append(t.health("a").probe_in)
        # 10 s doubled per failed probe (backoff 2), at most probe_max.
        assert intervals == pytest.approx([20.0, 40.0, 40.0, 40.0])
        assert t.health("a").failed_probes == 4


class TestSlowButAlive:
    def test_a_peer_never_seen_alive_gets_a_generous_probe_and_is_learned(self) -> None:
        clock, op, t, inputs, remote = setup(HEALTH)
        warm(clock, t, op, remote)  # the kind answers in 0.3 s: limit ~1.27 s
        slow = 3.0  # the new peer always answers after 3 s

        def slow_call() -> object:
            inputs.events.clear()
            call(t, op, inputs, remote, "slow")
            d = remote.calls[-1][1]
            clock.pump([0.01] * int(slow * 100))
            if not d.called:
                d.callback("late but fine")
            clock.pump([0.01] * 10)
            return inputs.events[0][0]

        assert [slow_call(), slow_call()] == ["timeout", "timeout"]
        assert t.health("slow").state == "suspect" and not t.health("slow").seen_alive
        clock.advance(10.0)
        limit = t.explain("get", "slow").first_sign
        assert limit.source == "probe" and limit.seconds == pytest.approx(4 * limit_for(0.3))
        assert slow_call() == "result"  # the generous probe saw it answer
        assert t.health("slow").state == "healthy"
        assert [slow_call() for _ in range(5)] == ["result"] * 5  # learned, not timed out

    def test_an_alive_peer_slower_than_the_limit_is_explored_and_learned(self) -> None:
        clock, op, t, inputs, remote = setup(HEALTH)
        warm(clock, t, op, remote, peers=("a", "b", "c", "d", "e", "f"), n=600)
        # Peer "b" now answers in 2 s every third call (0.3 s otherwise):
        # beyond its limit, but it keeps answering in between.
        outcomes, sources = [], set()
        for i in range(60):
            sources.add(t.explain("get", "b").first_sign.source)
            inputs.events.clear()
            call(t, op, inputs, remote, "b")
            d = remote.calls[-1][1]
            clock.pump([0.01] * (200 if i % 3 == 0 else 30))
            if not d.called:
                d.callback("ok")
            outcomes.append(inputs.events[0][0])
        assert "explore" in sources
        assert "timeout" in outcomes[:10]
        assert outcomes[-30:] == ["result"] * 30, outcomes


def test_no_backoff_of_call_limits_from_health_knobs() -> None:
    clock, op, t, _, remote = setup({"default": {"backoff": 3.0}})
    warm(clock, t, op, remote)
    waits = {round(stall(clock, t, op, remote, "a").waited, 6) for _ in range(5)}
    assert len(waits) == 1


class TestAKindSlowerThanItsInitial:
    """
    Every peer of a kind is slower than ``initial``: its calls time out
    until something lets one finish; from then on the limit is never below
    what that call proved is needed.
    """

    def test_slow_first_sign_learned_by_the_generous_probe(self) -> None:
        clock, op, t, inputs, remote = setup(HEALTH)
        outcomes = []
        for _ in range(12):
            inputs.events.clear()
            call(t, op, inputs, remote, "a")
            d = remote.calls[-1][1]
            clock.pump([0.05] * 80)  # headers after 4 s, while initial is 3 s
            if not d.called:
                d.callback("slow but fine")
            outcomes.append(inputs.events[0][0])
            clock.advance(2.0)
        assert outcomes[:2] == ["timeout", "timeout"]  # then suspect, probed at 12 s
        assert outcomes[-6:] == ["result"] * 6, outcomes

    def test_slow_chunks_learned_by_exploring(self) -> None:
        clock, op, t, inputs, remote = setup({"default": {"idle": {"initial": "2s"}}})
        outcomes = []
        for _ in range(12):
            inputs.events.clear()
            guarded = call(t, op, inputs, remote, "a")
            d = remote.calls[-1][1]
            clock.advance(0.5)
            guarded.progress()
            for _ in range(3):  # chunks 2.5 s apart, while initial is 2 s
                clock.pump([0.1] * 25)
                guarded.progress()
            if not d.called:
                d.callback("slow but fine")
            outcomes.append(inputs.events[0][0])
        assert outcomes.count("timeout") <= 3 and outcomes[-6:] == ["result"] * 6, outcomes
