"""
A seeded simulator of remote calls, for ``bench_timeouts.py``.

fsmcancel's own policies are run through the real code path: `Timeouts.call`
/ `Timeouts.hedged` with the real estimators and `GuardedCall`, on a
``task.Clock``; the simulated remote schedules its progress events and its
answer on that clock, and its canceller drops them, like a real request.
Only the comparison baselines (RFC 6298 and phi accrual on whole-call
latency) are computed here, because fsmcancel does not ship them.

Workload (per call, seeded):
  * 98.5% ordinary calls: lognormal latency, median 150 ms, sigma 0.6;
  * 1% slow but alive: 1.5 s x Pareto(alpha 1.2), capped at 5 min;
  * 0.5% silent stalls: the host vanishes right after its last sign of life
    (the start, or a progress event) and never answers;
  * while alive, a progress event (chunk or PONG) about every second
    (N(1 s, 50 ms)), the first at a random phase; with probability 0.05% a
    gap is stretched by a transport pause of 0.5-3 s (one per ~30 min of
    streaming);
  * halfway through, the host becomes 5x slower.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from fsmcancel.timeouts import TimedOut, TimeoutConfig, Timeouts

STALL_RATE = 0.005
SLOW_RATE = 0.01
PAUSE_RATE = 0.0005


@dataclass(frozen=True)
class Spec:
    """One simulated call: when it shows progress, and when (if) it answers."""

    latency: float  # inf for a stall
    progress: tuple[float, ...]  # offsets from the start
    slow: bool

    @property
    def stall(self) -> bool:
        return math.isinf(self.latency)

    @property
    def onset(self) -> float:
        """When a stalled call last showed life."""
        return self.progress[-1] if self.progress else 0.0


def _progress(rng: random.Random, until: float) -> list[float]:
    times = []
    t = rng.random()
    while t < until:
        times.append(t)
        gap = max(0.05, rng.gauss(1.0, 0.05))
        if rng.random() < PAUSE_RATE:
            gap += rng.uniform(0.5, 3.0)
        t += gap
    return times


def workload(n: int, seed: int) -> list[Spec]:
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        factor = 1.0 if i < n // 2 else 5.0
        r = rng.random()
        slow = STALL_RATE <= r < STALL_RATE + SLOW_RATE
        if slow:
            latency = min(1.5 * rng.paretovariate(1.2), 300.0) * factor
        else:
            latency = rng.lognormvariate(math.log(0.15), 0.6) * factor
        progress = _progress(rng, latency)
        if r < STALL_RATE:
            progress = progress[: rng.randint(0, len(progress))]
            latency = math.inf
        specs.append(Spec(latency, tuple(progress), slow))
    return specs


class StandInOperation:
    """The ``own``/``release``/``clock`` part of an operation."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.owned: dict[int, tuple[object, Callable[[Any], object]]] = {}

    def own(
        self, resource: Any, release: Callable[[Any], object], *, name: str | None = None
    ) -> Any:
        self.owned[id(resource)] = (resource, release)
        return resource

    def release(self, resource: object) -> None:
        obj, release = self.owned.pop(id(resource))
        release(obj)


def remote(clock: Clock, spec: Spec, progress: Callable[[], object]) -> Deferred[str]:
    """A call that reports progress and answers on ``clock`` as ``spec`` says."""
    pending: list[Any] = []

    def cancel(_: Deferred[str]) -> None:
        for p in pending:
            if p.active():
                p.cancel()

    d: Deferred[str] = Deferred(cancel)

    def next_event(index: int) -> None:
        pending.clear()
        if index < len(spec.progress):
            delay = spec.progress[index] - (clock.seconds() - start)
            pending.append(clock.callLater(max(0.0, delay), fire_progress, index))
        elif not spec.stall:
            delay = spec.latency - (clock.seconds() - start)
            pending.append(clock.callLater(max(0.0, delay), d.callback, "answer"))

    def fire_progress(index: int) -> None:
        progress()
        next_event(index + 1)

    start = clock.seconds()
    next_event(0)
    return d


def run_until(clock: Clock, done: Callable[[], bool]) -> None:
    """Step ``clock`` timer by timer (so each fires at its own time)."""
    while not done():
        clock.advance(clock.calls[0].getTime() - clock.seconds())


@dataclass
class Result:
    name: str
    detect: list[float] = field(default_factory=list)  # per stall
    live: int = 0
    slow: int = 0
    false_live: int = 0
    false_slow: int = 0
    wasted: float = 0.0
    calls: int = 0
    extra: int = 0  # hedges
    note: str = ""

    def record(self, spec: Spec, timed_out: bool, when: float) -> None:
        self.calls += 1
        if spec.stall:
            self.detect.append(when - spec.onset)
            self.wasted += when - spec.onset
            return
        self.live += 1
        self.slow += spec.slow
        if timed_out:
            self.false_live += 1
            self.false_slow += spec.slow
            self.wasted += when

    @property
    def mean_detect(self) -> float:
        return statistics.fmean(self.detect)

    @property
    def p99_detect(self) -> float:
        return statistics.quantiles(self.detect, n=100, method="inclusive")[98]

    @property
    def false_rate(self) -> float:
        return self.false_live / self.live

    @property
    def false_slow_rate(self) -> float:
        return self.false_slow / max(1, self.slow)

    @property
    def wasted_per_1000(self) -> float:
        return self.wasted / self.calls * 1000


def run_fsmcancel(name: str, config: TimeoutConfig, specs: list[Spec]) -> Result:
    """Each call through `Timeouts.call`, one after another, on one key."""
    clock = Clock()
    op = StandInOperation(clock)
    timeouts = Timeouts(config)
    result = Result(name)
    outcome: list[object] = []
    for spec in specs:
        outcome.clear()
        start = clock.seconds()
        holder: list[Any] = []
        call = timeouts.call(
            op,
            remote,
            clock,
            spec,
            lambda holder=holder: holder[0].progress(),
            kind="read",
            peer="server",
            on_result=outcome.append,
            on_failure=outcome.append,
            on_timeout=outcome.append,
        )
        holder.append(call)
        run_until(clock, lambda: bool(outcome))
        result.record(spec, isinstance(outcome[0], TimedOut), clock.seconds() - start)
    assert not clock.calls and not op.owned
    return result


def run_hedged(name: str, config: TimeoutConfig, specs: list[Spec], backups: list[Spec]) -> Result:
    """
    Each call through `Timeouts.hedged` on peers ("a", "b"); "b" answers as
    the matching entry of ``backups``.  ``detect`` here is how long after a
    stalled primary's last sign of life the caller got an answer.
    """
    clock = Clock()
    op = StandInOperation(clock)
    timeouts = Timeouts(config)
    result = Result(name)
    outcome: list[object] = []
    answered = []
    for spec, backup in zip(specs, backups, strict=True):
        outcome.clear()
        start = clock.seconds()
        holder: list[Any] = []

        def fn(
            peer: str, spec: Spec = spec, backup: Spec = backup, holder: list[Any] = holder
        ) -> Deferred[str]:
            chosen = spec if peer == "a" else backup
            return remote(clock, chosen, lambda: holder[0].progress(peer))

        call = timeouts.hedged(
            op,
            fn,
            kind="read",
            peers=["a", "b"],
            on_result=outcome.append,
            on_failure=outcome.append,
            on_timeout=outcome.append,
        )
        holder.append(call)
        run_until(clock, lambda: bool(outcome))
        result.extra += call.attempts - 1
        timed_out = isinstance(outcome[0], TimedOut)
        if spec.stall and not timed_out:
            answered.append(clock.seconds() - start - spec.onset)
        result.record(spec, timed_out, clock.seconds() - start)
    assert not clock.calls and not op.owned
    result.note = (
        f"stalled primary answered in {statistics.fmean(answered):.2f} s mean "
        f"({len(answered)}/{len(result.detect)}); +{result.extra / result.calls:.1%} requests"
    )
    return result


# ------------------------------------------------------------- baselines


def run_rfc6298(specs: list[Spec], floor: float = 1.0, cap: float = 60.0) -> Result:
    """RFC 6298 RTO on whole-call latency, Karn's rule, doubling on expiry."""
    result = Result("RFC 6298 on whole-call latency")
    srtt: float | None = None
    rttvar = 0.0
    rto = 1.0
    backoff = 1.0
    for spec in specs:
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


def run_phi_latency(
    specs: list[Spec], threshold: float = 8.0, window: int = 1000, pause: float = 3.0
) -> Result:
    """Phi accrual (Akka defaults) fitted to whole-call latencies."""
    result = Result("phi accrual on whole-call latency")
    samples: deque[float] = deque()
    total = total_sq = 0.0
    z = -statistics.NormalDist().inv_cdf(10.0**-threshold)
    for spec in specs:
        if len(samples) < 8:
            deadline = 10.0
        else:
            mean = total / len(samples)
            std = max(0.1, math.sqrt(max(0.0, total_sq / len(samples) - mean * mean)))
            deadline = mean + pause + z * std
        if spec.latency <= deadline:
            samples.append(spec.latency)
            total += spec.latency
            total_sq += spec.latency**2
            if len(samples) > window:
                old = samples.popleft()
                total -= old
                total_sq -= old * old
            result.record(spec, False, spec.latency)
        else:
            result.record(spec, True, deadline)
    return result
