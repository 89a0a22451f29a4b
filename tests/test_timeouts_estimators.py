"""
The estimators: cold start, learning, bounds, backoff, censoring (neither
collapse nor ratchet), bounded memory, export and import.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from fsmcancel.timeouts import Timeouts, load_config
from fsmcancel.timeouts._estimators import (
    MIN_GAPS,
    MIN_LATENCIES,
    GapEstimator,
    KeyEstimator,
    LatencyEstimator,
)
from fsmcancel.timeouts._rule import Rule


def rule(**default: Any) -> Rule:
    return load_config(env={}, data={"default": default}).rule("k", "p")


DEADLINE = rule(policy="deadline", deadline={"max": "60s"})
IDLE = rule()


class TestLatency:
    def test_exact_quantile(self) -> None:
        est = LatencyEstimator(1000)
        for i in range(1, 101):
            est.observe(float(i))
        q = est.quantile(0.95)
        assert q.exact and q.value == 95.0

    def test_censored_shifts_mass_right(self) -> None:
        # Kaplan-Meier: censored points stay "at risk", so the median of
        # 1..10 with 11..20 censored at 10.5 is beyond the completed calls.
        est = LatencyEstimator(100)
        for i in range(1, 11):
            est.observe(float(i))
        for _ in range(10):
            est.censor(10.5)
        assert est.quantile(0.5).exact  # S(10) = 10/20
        q = est.quantile(0.6)
        assert not q.exact and q.value == 10.0 and q.censored_max == 10.5

    def test_window_bounds_memory(self) -> None:
        est = LatencyEstimator(50)
        for i in range(10_000):
            est.observe(float(i))
        assert len(est) == 50
        assert est.quantile(0.5).value >= 9950

    def test_gap_running_stats_do_not_drift(self) -> None:
        gaps = GapEstimator(16)
        for i in range(100_000):
            gaps.observe(1e6 if i < 16 else 1.0)
        assert gaps.timeout(8.0, 0.1, 0.0) == pytest.approx(1.0 + 5.612 * 0.1, rel=1e-3)


class TestKeyEstimator:
    def test_cold_start_uses_initial(self) -> None:
        est = KeyEstimator(DEADLINE)
        assert est.deadline(DEADLINE) == 10.0
        assert est.idle_timeout(IDLE) == 5.0
        assert est.hedge_delay(DEADLINE) == 1.0
        for _ in range(MIN_LATENCIES - 1):
            est.completed(0.1)
        assert est.deadline(DEADLINE) == 10.0

    def test_learns_and_stays_in_bounds(self) -> None:
        est = KeyEstimator(DEADLINE)
        rng = random.Random(1)
        for _ in range(2000):
            est.completed(rng.uniform(1.0, 2.0))
        assert 3.9 < est.deadline(DEADLINE) <= 4.0  # p99.9 x 2
        for _ in range(2000):
            est.completed(0.001)
        assert est.deadline(DEADLINE) == 0.25  # min
        for _ in range(2000):
            est.completed(100.0)
        assert est.deadline(DEADLINE) == 60.0  # max

    def test_idle_learns_from_gaps(self) -> None:
        est = KeyEstimator(IDLE)
        for _ in range(MIN_GAPS):
            est.gaps.observe(1.0)
        # mean 1 + pause 1 + z(8)=5.61 * min_std 0.1
        assert est.idle_timeout(IDLE) == pytest.approx(2.561, abs=1e-3)
        for _ in range(200):
            est.gaps.observe(100.0)
        assert est.idle_timeout(IDLE) == 30.0

    def test_backoff_and_reset(self) -> None:
        est = KeyEstimator(DEADLINE)
        seen = []
        for _ in range(5):
            seen.append(est.deadline(DEADLINE))
            est.timed_out(seen[-1])
        assert seen == [10.0, 20.0, 40.0, 60.0, 60.0]
        assert est.idle_timeout(IDLE) == 30.0
        est.completed(1.0)
        assert est.deadline(DEADLINE) == 10.0
        assert est.idle_timeout(IDLE) == 5.0

    def test_backoff_disabled(self) -> None:
        fixed = rule(policy="deadline", backoff=1)
        est = KeyEstimator(fixed)
        est.timed_out(10.0)
        assert est.deadline(fixed) == 10.0

    def test_cancellation_is_not_a_timeout(self) -> None:
        est = KeyEstimator(DEADLINE)
        est.cancelled(0.5)
        assert est.timeouts == 0 and len(est.latency) == 1

    @staticmethod
    def drive(est: KeyEstimator, rng: random.Random, calls: int, stall: float) -> list[float]:
        """Calls of 0.1-0.2 s, 1% slow (3-4 s), ``stall`` never answering."""
        deadlines = []  # without backoff
        for _ in range(calls):
            deadline = est.deadline(DEADLINE)
            if not est.timeouts:
                deadlines.append(deadline)
            r = rng.random()
            latency = float("inf") if r < stall else rng.uniform(3, 4) if r < stall + 0.01 else 0.15
            if latency > deadline:
                est.timed_out(deadline)
            else:
                est.completed(latency)
        return deadlines

    def test_timeouts_do_not_collapse(self) -> None:
        # Slow-but-alive calls time out while the deadline is too tight; as
        # censored observations they keep it from collapsing onto the fast
        # majority, so it learns to cover them.
        est = KeyEstimator(DEADLINE)
        deadlines = self.drive(est, random.Random(2), 20_000, stall=0.0)
        assert min(deadlines[5000:]) >= 6.0

    def test_stalls_do_not_ratchet(self) -> None:
        # Stalls (0.5%, more than 1 - q) are censored at the deadline: the
        # deadline must hold, not creep up to the 60 s cap.
        est = KeyEstimator(DEADLINE)
        deadlines = self.drive(est, random.Random(3), 20_000, stall=0.005)
        assert max(deadlines[5000:]) <= 10.0

    def test_recording_timeouts_as_latencies_would_ratchet(self) -> None:
        # The failure mode the censoring avoids, shown on the same data.
        est = KeyEstimator(DEADLINE)
        rng = random.Random(3)
        for _ in range(20_000):
            deadline = est.deadline(DEADLINE)
            r = rng.random()
            est.completed(deadline if r < 0.005 else rng.uniform(3, 4) if r < 0.015 else 0.15)
        assert est.deadline(DEADLINE) == 60.0


class TestPersistence:
    def test_export_import_round_trip(self) -> None:
        config = load_config(env={}, data={"kinds": {"get": {"policy": "deadline"}}})
        a = Timeouts(config)
        est = a.estimator("get", "p1")
        rng = random.Random(4)
        for _ in range(500):
            est.completed(rng.uniform(0.1, 0.3))
            est.gaps.observe(rng.uniform(0.9, 1.1))
        est.timed_out(3.0)
        text = a.dumps()
        json.loads(text)  # plain JSON

        b = Timeouts(config)
        b.loads(text)
        rule = config.rule("get", "p1")
        other = b.estimator("get", "p1")
        assert other.deadline(rule) == est.deadline(rule)
        assert other.idle_timeout(rule) == est.idle_timeout(rule)
        assert other.timeouts == 1
        assert b.export_state() == a.export_state()

    def test_import_rebounds_windows(self) -> None:
        a = Timeouts(load_config(env={}))
        for i in range(1000):
            a.estimator("k", "p").completed(float(i))
        small = Timeouts(load_config(env={}, data={"default": {"deadline": {"window": 100}}}))
        small.import_state(a.export_state())
        assert len(small.estimator("k", "p").latency) == 100

    @pytest.mark.parametrize(
        "state",
        [
            {"version": 99, "keys": []},
            {"version": 1, "keys": [{"peer": "p"}]},
            {"version": 1, "keys": [{"peer": "p", "kind": "k", "latency": [[-1, 0]]}]},
            {"version": 1, "keys": [{"peer": "p", "kind": "k", "gaps": ["x"]}]},
            {"version": 1, "keys": [{"peer": "p", "kind": "k", "timeouts": -1}]},
        ],
    )
    def test_bad_state_changes_nothing(self, state: dict[str, Any]) -> None:
        t = Timeouts(load_config(env={}))
        t.estimator("k", "p").completed(1.0)
        before = t.export_state()
        with pytest.raises(ValueError):
            t.import_state(state)
        assert t.export_state() == before

    def test_keys_bounded(self) -> None:
        t = Timeouts(load_config(env={}), max_keys=10)
        for i in range(100):
            t.estimator("k", f"peer{i}")
        assert len(t.export_state()["keys"]) == 10
