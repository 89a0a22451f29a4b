"""
A seeded simulator of many peers, each starting cold, for ``bench_timeouts.py``.

fsmcancel's policies run through the real code path: `Timeouts.call` /
`Timeouts.hedged` with the real estimators, health and `GuardedCall`, on a
``task.Clock``, ``CONCURRENCY`` calls in flight; the simulated remote
schedules its progress events and answer on that clock, and its canceller
drops them, like a real request.  The classic baselines (fixed, RFC 6298,
phi accrual) are computed in ``timeouts_baselines.py`` from the same call
specs, each peer starting cold, because fsmcancel does not ship them.

A call (see `Family` for the knobs and `FAMILIES` for the four workloads):

* latency lognormal (``median`` x the peer's own factor, ``sigma``); a share
  ``slow`` is slow but alive: ``slow_scale`` x Pareto(``slow_alpha``);
* while alive, a progress event about every ``interval`` seconds, the first
  at a random phase;
* every gap between two events (request to first event, event to event,
  last event to the answer) is stretched, with probability ``pause_rate``,
  by a transport pause of ``pause_scale`` x Pareto(``pause_alpha``): a TCP
  retransmission (the Linux RTO floor is 200 ms) and its doublings;
* a share ``stall`` never answers: silent from the request on, or (share
  ``midstream`` of them) after some progress;
* optionally every peer becomes ``shift`` times slower halfway through, and
  ``dead`` peers go silent for good at a random point mid-session.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from fsmcancel.timeouts import TimedOut, TimeoutConfig, Timeouts

CONCURRENCY = 8
KIND = "rpc"


@dataclass(frozen=True)
class Family:
    name: str
    median: float = 0.15
    sigma: float = 0.6
    slow: float = 0.01
    slow_scale: float = 1.5
    slow_alpha: float = 1.2
    stall: float = 0.005
    midstream: float = 0.0
    interval: float = 1.0
    pause_rate: float = 0.002
    pause_scale: float = 0.2
    pause_alpha: float = 1.5
    peers: int = 30
    calls: int = 200  # per peer
    shift: float = 1.0  # latency factor in the second half
    shift_first_sign: bool = False  # the shift slows the progress events too
    dead: int = 0
    spread: float = 0.0  # sigma of each peer's own latency factor


FAMILIES = {
    "wan": Family("WAN RPC"),
    "heavy": Family(
        "heavy tail", sigma=1.0, slow=0.05, stall=0.01, midstream=0.5,
        pause_rate=0.01, pause_scale=0.5, pause_alpha=1.2,
    ),
    "shift": Family("regime shift", shift=5.0),
    "dead": Family("dead peers", dead=3),
}  # fmt: skip

#: Variations of each family, for confirming on workloads nothing was tuned on.
VARIATIONS = {
    "wan": [
        replace(FAMILIES["wan"], name="WAN, median 60 ms sigma 0.9, peers differ", median=0.06,
                sigma=0.9, spread=0.5),
        replace(FAMILIES["wan"], name="WAN, 2% stalls, 3% slow, 10 peers", stall=0.02, slow=0.03,
                peers=10),
        replace(FAMILIES["wan"], name="WAN, progress every 0.5 s", interval=0.5),
    ],
    "heavy": [
        replace(FAMILIES["heavy"], name="heavy, pause alpha 1.1, 2% pauses", pause_alpha=1.1,
                pause_rate=0.02),
    ],
    "shift": [
        replace(FAMILIES["shift"], name="shift x5, first sign and progress too",
                shift_first_sign=True),
    ],
    "dead": [
        replace(FAMILIES["dead"], name="dead peers, 10 of 20, 2% stalls", dead=10, peers=20,
                stall=0.02),
    ],
}  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """One simulated call: when it shows signs of life, and when (if) it answers."""

    peer: str
    index: int  # the call's number at its peer
    latency: float  # inf for a stall
    events: tuple[float, ...]  # progress offsets from the start
    slow: bool
    dead: bool = False
    #: For a call to a dead peer: how the call would have gone had it been
    #: sent to a live one (what a caller steering away from the dead gets).
    instead: Spec | None = None

    @property
    def stall(self) -> bool:
        return math.isinf(self.latency)

    @property
    def onset(self) -> float:
        """When a stalled call last showed life."""
        return self.events[-1] if self.events else 0.0


def _timeline(rng: random.Random, f: Family, latency: float, interval: float) -> list[float]:
    """Progress events and the answer (last), with transport pauses."""
    nominal = []
    t = rng.random() * interval
    while t < latency:
        nominal.append(t)
        t += max(0.05 * interval, rng.gauss(interval, 0.05 * interval))
    nominal.append(latency)
    out, shift = [], 0.0
    for t in nominal:
        if rng.random() < f.pause_rate:
            shift += min(f.pause_scale * rng.paretovariate(f.pause_alpha), 120.0)
        out.append(t + shift)
    return out


def workload(f: Family, seed: int) -> list[Spec]:
    """Every call of every peer, interleaved in a random order."""
    rng = random.Random(seed)
    factors = {f"peer{p}": math.exp(rng.gauss(0.0, f.spread)) for p in range(f.peers)}
    dying = set(rng.sample(sorted(factors), f.dead))
    death = {p: rng.randint(f.calls // 4, 3 * f.calls // 4) for p in dying}
    order = [p for p in factors for _ in range(f.calls)]
    rng.shuffle(order)
    counts = dict.fromkeys(factors, 0)
    specs = []
    for peer in order:
        index = counts[peer]
        counts[peer] += 1
        factor = factors[peer] * (f.shift if index >= f.calls // 2 else 1.0)
        interval = f.interval * (factor if f.shift_first_sign and index >= f.calls // 2 else 1.0)
        r = rng.random()
        slow = f.stall <= r < f.stall + f.slow
        if slow:
            latency = min(f.slow_scale * rng.paretovariate(f.slow_alpha), 300.0) * factor
        else:
            latency = rng.lognormvariate(math.log(f.median * factor), f.sigma)
        timeline = _timeline(rng, f, latency, interval)
        dead = peer in death and index >= death[peer]
        live = Spec(peer, index, timeline[-1], tuple(timeline[:-1]), slow)
        if dead or r < f.stall:
            mid = len(timeline) > 1 and rng.random() < f.midstream
            keep = rng.randint(1, len(timeline) - 1) if mid else 0
            events = tuple(timeline[: min(keep, len(timeline) - 1)]) if not dead else ()
            instead = None if r < f.stall else live
            specs.append(Spec(peer, index, math.inf, events, False, dead, instead))
        else:
            specs.append(live)
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


def remote(
    clock: Clock,
    spec: Spec,
    progress: Callable[[], object],
    dead: Callable[[], bool] = lambda: False,
    delivered: list[float] | None = None,
) -> Deferred[str]:
    """
    A call that reports progress and answers on ``clock`` as ``spec`` says,
    until ``dead()`` says its peer died: from then on it is silent.  The
    offsets of the progress events it delivered are appended to ``delivered``.
    """
    pending: list[Any] = []
    start = clock.seconds()

    def cancel(_: Deferred[str]) -> None:
        for p in pending:
            if p.active():
                p.cancel()

    d: Deferred[str] = Deferred(cancel)

    def next_event(index: int) -> None:
        pending.clear()
        if index < len(spec.events):
            delay = spec.events[index] - (clock.seconds() - start)
            pending.append(clock.callLater(max(0.0, delay), fire_progress, index))
        elif not spec.stall:
            delay = spec.latency - (clock.seconds() - start)
            pending.append(clock.callLater(max(0.0, delay), answer))

    def fire_progress(index: int) -> None:
        if dead():
            return
        if delivered is not None:
            delivered.append(clock.seconds() - start)
        progress()
        next_event(index + 1)

    def answer() -> None:
        if not dead():
            d.callback("answer")

    next_event(0)
    return d


@dataclass
class Result:
    name: str
    detect: list[float] = field(default_factory=list)  # per stall, from its onset
    #: Per dead peer, (call number, detection) of each call started after it
    #: died (calls in flight when it died are stalls, not in this list).
    dead_detect: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    live: int = 0
    slow: int = 0
    cold: int = 0  # live calls among each peer's first 20
    false_live: int = 0
    false_slow: int = 0
    false_cold: int = 0
    wasted: float = 0.0
    calls: int = 0
    extra: int = 0  # backups
    note: str = ""

    def record(self, spec: Spec, timed_out: bool, when: float) -> None:
        """``when``: seconds from the call's start to its outcome."""
        self.calls += 1
        if spec.stall:
            self.detect.append(when - spec.onset)
            self.wasted += when - spec.onset
            if spec.dead:
                self.dead_detect.setdefault(spec.peer, []).append((spec.index, when - spec.onset))
            return
        self.live += 1
        self.slow += spec.slow
        self.cold += spec.index < 20
        if timed_out:
            self.false_live += 1
            self.false_slow += spec.slow
            self.false_cold += spec.index < 20
            self.wasted += when

    def merge(self, other: Result) -> None:
        self.detect += other.detect
        for peer, times in other.dead_detect.items():
            self.dead_detect[f"{len(self.dead_detect)}:{peer}"] = times
        for name in ("live", "slow", "cold", "false_live", "false_slow", "false_cold", "calls",
                     "extra"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.wasted += other.wasted

    @property
    def mean_detect(self) -> float:
        return statistics.fmean(self.detect) if self.detect else math.nan

    @property
    def p99_detect(self) -> float:
        if len(self.detect) < 2:
            return self.detect[0] if self.detect else math.nan
        return statistics.quantiles(self.detect, n=100, method="inclusive")[98]

    def rate(self, part: int, whole: int) -> float:
        return part / whole if whole else 0.0


def run_fsmcancel(name: str, config: TimeoutConfig, specs: list[Spec], *,
                  rank: bool = False) -> Result:  # fmt: skip
    """
    Every call through `Timeouts.call`, ``CONCURRENCY`` in flight.  With
    ``rank``, a call may go to another live peer instead of the assigned
    one when `Timeouts.rank` says the assigned one is suspect (the call's
    spec is then the same, on the other peer, unless that one is dead too).
    """
    clock = Clock()
    op = StandInOperation(clock)
    timeouts = Timeouts(config, clock=clock)
    result = Result(name)
    queue = list(reversed(specs))
    peers = sorted({s.peer for s in specs})
    dead_at: dict[str, int] = {}
    for s in specs:
        if s.dead:
            dead_at[s.peer] = min(dead_at.get(s.peer, s.index), s.index)
    # A peer dies when its first dead call starts: its calls still in
    # flight then go silent too (a dead host answers nothing).
    died: dict[str, float] = {}
    running = 0
    rng = random.Random(len(specs))

    def launch() -> None:
        nonlocal running
        spec = queue.pop()
        if rank:
            other = peers[rng.randrange(len(peers))]
            chosen = timeouts.rank(KIND, [spec.peer, other])[0]
            if chosen != spec.peer:
                gone = other in died  # the other peer is dead already
                base = spec.instead or spec
                spec = replace(base, peer=other, instead=None)
                if gone:
                    spec = replace(spec, latency=math.inf, events=(), slow=False, dead=True)
        start = clock.seconds()
        holder: list[Any] = []
        delivered: list[float] = []
        peer = spec.peer
        if spec.dead:
            died.setdefault(peer, start)

        def done(outcome: object) -> None:
            nonlocal running
            running -= 1
            timed_out = isinstance(outcome, TimedOut)
            cut = spec
            if timed_out and not spec.stall and peer in died:
                # Cut by its peer's death: silent since the later of its
                # last event and the death (the onset of its stall).
                onset = max([0.0, died[peer] - start, *delivered])
                cut = replace(spec, latency=math.inf, events=(onset,), slow=False)
            result.record(cut, timed_out, clock.seconds() - start)

        running += 1
        call = timeouts.call(
            op, remote, clock, spec, lambda: holder[0].progress(),
            lambda: peer in died, delivered,
            kind=KIND, peer=peer, on_result=done, on_failure=done, on_timeout=done,
        )  # fmt: skip
        holder.append(call)

    while queue or running:
        while queue and running < CONCURRENCY:
            launch()
        if clock.calls:
            clock.advance(max(0.0, clock.calls[0].getTime() - clock.seconds()))
    assert not clock.calls and not op.owned
    result.note = _dead_note(timeouts, dead_at)
    return result


def _dead_note(timeouts: Timeouts, dead_at: dict[str, int]) -> str:
    if not dead_at:
        return ""
    states = sorted({timeouts.health(p).state for p in dead_at})
    return f"dead peers now: {', '.join(states)}"


def run_hedged(name: str, config: TimeoutConfig, specs: list[Spec], backups: list[Spec]) -> Result:
    """
    Every call through `Timeouts.hedged` on (its peer, a backup peer whose
    answer is the matching entry of ``backups``).  ``detect`` is how long
    after a stalled primary's last sign of life a backup was started (or
    the call timed out); a false timeout is a live call reported timed out.
    """
    clock = Clock()
    op = StandInOperation(clock)
    timeouts = Timeouts(config, clock=clock)
    result = Result(name)
    queue = list(reversed(list(zip(specs, backups, strict=True))))
    running = 0
    answered: list[float] = []

    def launch() -> None:
        nonlocal running
        spec, backup = queue.pop()
        backup = replace(backup, peer=backup.peer if backup.peer != spec.peer else "spare")
        start = clock.seconds()
        holder: list[Any] = []
        launched: list[float] = []

        def fn(peer: str) -> Deferred[str]:
            launched.append(clock.seconds() - start)
            chosen = spec if peer == spec.peer else backup
            return remote(clock, chosen, lambda: holder[0].progress(peer))

        def done(outcome: object) -> None:
            nonlocal running
            running -= 1
            took = clock.seconds() - start
            result.extra += len(launched) - 1
            timed_out = isinstance(outcome, TimedOut)
            if spec.stall and not timed_out:
                answered.append(took - spec.onset)
                took = launched[1] if len(launched) > 1 else took
            result.record(spec, timed_out, took)

        running += 1
        call = timeouts.hedged(
            op, fn, kind=KIND, peers=[spec.peer, backup.peer],
            on_result=done, on_failure=done, on_timeout=done,
        )  # fmt: skip
        holder.append(call)

    while queue or running:
        while queue and running < CONCURRENCY:
            launch()
        if clock.calls:
            clock.advance(max(0.0, clock.calls[0].getTime() - clock.seconds()))
    assert not clock.calls and not op.owned
    if answered:
        result.note = (
            f"stalled primary answered by the backup {statistics.fmean(answered):.2f} s mean "
            f"after its last sign of life"
        )
    return result
