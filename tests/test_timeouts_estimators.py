"""
What the timeouts learn: histograms (quantiles off Kaplan-Meier, bounded
memory), the pooled prior of a kind, stalls as their own population
(identifiable however frequent, neither collapse nor ratchet), and a gap
model that holds its false-timeout target under Pareto-tailed pauses.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import pytest

from fsmcancel.timeouts import Timeouts, load_config
from fsmcancel.timeouts._estimators import MIN_SAMPLES, KeyEstimator
from fsmcancel.timeouts._histogram import Histogram, bin_of, quantile, upper
from fsmcancel.timeouts._rule import Rule


def rule(**default: Any) -> Rule:
    return load_config(env={}, data={"default": default}).rule("k", "p")


IDLE = rule()


def first_sign_limit(t: Timeouts, peer: str = "p") -> float:
    return t.explain("k", peer).first_sign.seconds


class TestHistogram:
    def test_exact_quantile(self) -> None:
        h = Histogram(10_000)
        for i in range(1, 101):
            h.add(i / 100)
        value, exact = quantile([(h, 1.0)], 0.95)
        assert exact and value == pytest.approx(upper(bin_of(0.95)))

    def test_censored_observations_shift_mass_right(self) -> None:
        # Kaplan-Meier: censored points stay "at risk", so the median of
        # 1..10 with ten more censored at 10.5 is beyond the completed calls.
        h = Histogram(10_000)
        for i in range(1, 11):
            h.add(float(i))
        for _ in range(10):
            h.censor(10.5)
        assert quantile([(h, 1.0)], 0.5)[1]
        value, exact = quantile([(h, 1.0)], 0.6)
        assert not exact and value == pytest.approx(upper(bin_of(10.0)))

    def test_weighted_parts_add(self) -> None:
        fast, slow = Histogram(10_000), Histogram(10_000)
        for _ in range(99):
            fast.add(0.1)
        slow.add(5.0)
        assert quantile([(fast, 1.0)], 0.995)[0] < 0.2
        assert quantile([(fast, 1.0), (slow, 1.0)], 0.995)[0] == pytest.approx(upper(bin_of(5.0)))

    def test_memory_bounded_and_old_observations_fade(self) -> None:
        h = Histogram(100)
        for i in range(100_000):
            h.add(1.0 + (i % 7))
        assert len(h.events) <= 7 and h.total < 200 and h.seen == 100_000
        for _ in range(1000):
            h.add(50.0)
        assert quantile([(h, 1.0)], 0.5)[0] == pytest.approx(upper(bin_of(50.0)))

    def test_durations_far_out_of_range_are_clamped(self) -> None:
        h = Histogram(10)
        h.add(0.0)
        h.add(1e12)
        assert sorted(h.events) == [0, 400]


class TestPooledPrior:
    def test_a_new_peer_of_a_known_kind_gets_a_limit_near_theirs_on_its_first_call(self) -> None:
        t = Timeouts(load_config(env={}))
        rng = random.Random(1)
        for i in range(600):
            t.estimator("k", f"peer{i % 6}").first_sign(rng.uniform(0.1, 0.4))
        known = [first_sign_limit(t, f"peer{i}") for i in range(6)]
        new = t.explain("k", "newcomer").first_sign
        assert new.source == "prior"
        assert new.seconds == pytest.approx(statistics.fmean(known), rel=0.1)
        assert new.seconds < IDLE.idle.initial / 2
        assert ("k", "newcomer") not in t.known()  # explaining remembers nothing

    def test_initial_only_while_the_whole_kind_is_new(self) -> None:
        t = Timeouts(load_config(env={}))
        for i in range(MIN_SAMPLES - 1):
            t.estimator("k", f"peer{i}").first_sign(0.4)  # each peer: one call
        assert t.explain("k", "other").first_sign.source == "initial"
        assert first_sign_limit(t, "other") == IDLE.idle.initial
        t.estimator("k", "peer0").first_sign(0.4)
        assert first_sign_limit(t, "other") < IDLE.idle.initial
        for i in range(200):
            t.estimator("k", f"peer{i % 20}").first_sign(0.4)
        limit = t.explain("k", "other").first_sign
        assert limit.source == "prior" and limit.seconds == pytest.approx(3.5 * upper(bin_of(0.4)))

    def test_a_peer_consistently_slower_than_its_kind_shows_after_a_few_calls(self) -> None:
        t = Timeouts(load_config(env={}))
        for i in range(3000):
            t.estimator("k", f"peer{i % 10}").first_sign(0.4)
        for _ in range(15):  # its own count twice: 1% of what it is judged by
            t.estimator("k", "slow").first_sign(1.5)
        assert first_sign_limit(t, "slow") == pytest.approx(3.5 * upper(bin_of(1.5)))
        assert first_sign_limit(t, "peer0") == pytest.approx(3.5 * upper(bin_of(0.4)))

    def test_one_unlucky_pause_does_not_set_a_peers_limit(self) -> None:
        t = Timeouts(load_config(env={}))
        for i in range(2000):
            t.estimator("k", f"peer{i % 10}").first_sign(0.4)
        t.estimator("k", "peer3").first_sign(3.0)
        assert first_sign_limit(t, "peer3") == pytest.approx(3.5 * upper(bin_of(0.4)))


def drive(
    t: Timeouts, rng: random.Random, calls: int, stall: float, slow: float = 0.0
) -> list[float]:
    """
    Calls through the estimator as a guarded call would report them: first
    sign of life after 0.1-0.3 s (``slow`` of them after 0.6-0.9 s); a share
    ``stall`` never shows one and is given up at the limit.  Returns the
    limit each call started with.
    """
    est = t.estimator("k", "p")
    limits = []
    for _ in range(calls):
        limit = est.silence_limit(IDLE, False).seconds  # the estimate, exploration aside
        limits.append(limit)
        r = rng.random()
        took = (
            math.inf
            if r < stall
            else rng.uniform(0.6, 0.9)
            if r < stall + slow
            else rng.uniform(0.1, 0.3)
        )
        if took > limit:
            est.stalled()
        else:
            est.first_sign(took)
            est.completed(took)
    return limits


class TestStallsAreTheirOwnPopulation:
    @pytest.mark.parametrize("stall", [0.0, 0.02, 0.1, 0.3])
    def test_the_live_estimate_stays_identifiable_however_frequent_stalls_are(
        self, stall: float
    ) -> None:
        # Stalls 2-30 times more frequent than 1 - q (q = 0.99): the limit is
        # what the live calls alone teach, neither held at initial nor
        # ratcheted towards the cap.
        t = Timeouts(load_config(env={}))
        limits = drive(t, random.Random(2), 3000, stall)
        learned = 3.5 * upper(bin_of(0.3))
        assert limits[-1] == pytest.approx(learned, rel=0.07)
        assert max(limits[500:]) <= learned * 1.07
        assert t.estimator("k", "p").stalls > 0 or stall == 0.0

    def test_a_slow_live_minority_within_the_headroom_is_learned_not_collapsed(self) -> None:
        # 3% of live calls take 0.6-0.9 s: beyond the fast calls' p99 but
        # within its headroom, so they complete and the limit covers them.
        t = Timeouts(load_config(env={}))
        limits = drive(t, random.Random(3), 5000, stall=0.01, slow=0.03)
        assert min(limits[1000:]) >= 4 * 0.6

    def test_recording_stalls_as_latencies_would_ratchet(self) -> None:
        # The failure mode kept out, shown on the same data: stalls recorded
        # as silences of the limit's length drive the limit to the cap.
        t = Timeouts(load_config(env={}))
        est = t.estimator("k", "p")
        rng = random.Random(4)
        for _ in range(5000):
            limit = est.silence_limit(IDLE, False).seconds
            est.first_sign(limit if rng.random() < 0.05 else rng.uniform(0.1, 0.3))
        assert first_sign_limit(t) == IDLE.idle.max

    def test_cancelled_calls_are_censored_live_calls(self) -> None:
        est = KeyEstimator(IDLE, Timeouts(load_config(env={})).pool("k"))
        est.cancelled(0.5, None)
        est.cancelled(2.0, 0.7)
        assert est.stalls == 0 and est.calls == 0
        assert est.first.censored == {bin_of(0.5): 1.0}
        assert est.gaps.censored == {bin_of(0.7): 1.0}


def pareto_gaps(rng: random.Random, n: int, rate: float) -> list[float]:
    """Gaps of ~1 s, ``rate`` of them stretched by a 0.2 s x Pareto(1.5) pause."""
    return [
        max(0.05, rng.gauss(1.0, 0.05))
        + (0.2 * rng.paretovariate(1.5) if rng.random() < rate else 0.0)
        for _ in range(n)
    ]


@pytest.mark.parametrize("rate", [0.002, 0.01])
def test_the_gap_model_holds_its_target_under_pareto_pauses(rate: float) -> None:
    # Learn from 20,000 gaps, then count how many of 200,000 fresh gaps
    # would have been declared stalls.  A normal fit at phi = 4 (the same
    # 1e-4 nominal exceedance) is fooled by the heavy tail: with pauses on
    # 0.2% of gaps (the WAN workload) we hold 1e-4 and it does not; with 1%
    # neither is that low, and we time out at least ten times fewer.
    t = Timeouts(load_config(env={}))
    rng = random.Random(5)
    learning = pareto_gaps(rng, 20_000, rate)
    for gap in learning:
        t.estimator("k", "p").gap(gap)
    limit = t.explain("k", "p").silence.seconds
    fresh = pareto_gaps(rng, 200_000, rate)
    ours = sum(g > limit for g in fresh) / len(fresh)
    mean, std = statistics.fmean(learning), statistics.pstdev(learning)
    normal = mean + -statistics.NormalDist().inv_cdf(1e-4) * std
    theirs = sum(g > normal for g in fresh) / len(fresh)
    if rate < 0.005:
        assert ours <= 1e-4 < theirs, (limit, ours, normal, theirs)
    else:
        assert ours * 10 <= theirs, (limit, ours, normal, theirs)
