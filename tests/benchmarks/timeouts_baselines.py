"""
The classic stall-detection policies fsmcancel is compared with, computed
from the same call specs as `timeouts_sim` (each peer starting cold):
a fixed deadline, RFC 6298's RTO, and phi accrual (Akka's constants) on
whole-call latency and on the gaps between signs of life.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque

from timeouts_sim import Result, Spec  # type: ignore[import-not-found, unused-ignore]


def _by_peer(specs: list[Spec]) -> dict[str, list[Spec]]:
    peers: dict[str, list[Spec]] = {}
    for spec in specs:
        peers.setdefault(spec.peer, []).append(spec)
    return peers


def run_fixed(specs: list[Spec], seconds: float = 10.0) -> Result:
    """A constant whole-call deadline (Tahoe's OVERDUE)."""
    result = Result(f"fixed {seconds:g} s")
    for spec in specs:
        result.record(spec, spec.latency > seconds, min(spec.latency, seconds))
    return result


def run_rfc6298(specs: list[Spec], floor: float = 1.0, cap: float = 60.0) -> Result:
    """RFC 6298 RTO per peer on whole-call latency: Karn, doubling on expiry."""
    result = Result("RFC 6298 on whole-call latency")
    for calls in _by_peer(specs).values():
        srtt: float | None = None
        rttvar, rto, backoff = 0.0, 1.0, 1.0
        for spec in calls:
            deadline = min(cap, rto * backoff)
            if spec.latency <= deadline:
                r = spec.latency
                if srtt is None:
                    srtt, rttvar = r, r / 2
                else:
                    rttvar = 0.75 * rttvar + 0.25 * abs(srtt - r)
                    srtt = 0.875 * srtt + 0.125 * r
                rto = max(floor, srtt + 4 * rttvar)
                backoff = 1.0
                result.record(spec, False, spec.latency)
            else:
                backoff *= 2
                result.record(spec, True, deadline)
    return result


class _Phi:
    """Akka's phi accrual: normal fit, threshold 8, min std 100 ms, pause 3 s."""

    Z = -statistics.NormalDist().inv_cdf(1e-8)

    def __init__(self, window: int = 1000, first: float = 1.0) -> None:
        # Akka seeds its history with first-heartbeat-estimate (1 s) and a
        # standard deviation of a quarter of it.
        self.samples: deque[float] = deque()
        self.window = window
        self.total = self.squares = 0.0
        for value in (first - first / 4, first + first / 4):
            self.add(value)

    def limit(self) -> float:
        n = len(self.samples)
        mean = self.total / n
        std = max(0.1, math.sqrt(max(0.0, self.squares / n - mean * mean)))
        return mean + 3.0 + self.Z * std

    def add(self, value: float) -> None:
        self.samples.append(value)
        self.total += value
        self.squares += value * value
        if len(self.samples) > self.window:
            old = self.samples.popleft()
            self.total -= old
            self.squares -= old * old


def run_phi_latency(specs: list[Spec]) -> Result:
    """Phi accrual (Akka constants) fitted to each peer's whole-call latencies."""
    result = Result("phi accrual on whole-call latency")
    for calls in _by_peer(specs).values():
        phi = _Phi()
        for spec in calls:
            limit = phi.limit()
            if spec.latency <= limit:
                phi.add(spec.latency)
                result.record(spec, False, spec.latency)
            else:
                result.record(spec, True, limit)
    return result


def run_phi_gaps(specs: list[Spec]) -> Result:
    """
    Phi accrual (Akka constants) on the gaps between signs of life (the
    request counts as one), per peer: what a heartbeat detector would do.
    """
    result = Result("phi accrual on gaps (Akka)")
    for calls in _by_peer(specs).values():
        phi = _Phi()
        for spec in calls:
            limit = phi.limit()
            marks = [0.0, *spec.events] + ([] if spec.stall else [spec.latency])
            gaps = [b - a for a, b in itertools.pairwise(marks)]
            late = next((i for i, g in enumerate(gaps) if g > limit), None)
            if late is not None:
                result.record(spec, True, marks[late] + limit)
            elif spec.stall:
                result.record(spec, True, marks[-1] + limit)
            else:
                result.record(spec, False, spec.latency)
            for g in gaps[: late if late is not None else len(gaps)]:
                phi.add(g)
    return result
