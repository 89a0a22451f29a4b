"""
What fsmcancel learns about one (peer, call kind): latencies and the gaps
between progress events.

Two failure modes shape this module (see the notes on stall detection):

* Dropping timed-out calls makes a latency quantile *collapse* onto the fast
  majority, so every slow-but-alive call keeps timing out.
* Recording a timed-out call as if it had taken the time we waited makes the
  quantile *ratchet up*: each timeout raises the deadline, which lets the next
  stall wait longer, which raises it again, up to the cap.

A timed-out (or cancelled) call is neither: it is a *censored* observation,
"took longer than ``waited``".  `LatencyEstimator` keeps both kinds and reads
quantiles off the Kaplan-Meier estimate of the survival function, which is
the standard unbiased way to use censored data.  When more of the window is
censored than the quantile allows (e.g. stalls are more frequent than
``1 - q``), the quantile is simply unknown; `KeyEstimator` then *holds* the
deadline instead of guessing in either direction.

Every window is bounded, so memory per key is O(window).
"""

from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from fsmcancel.timeouts._rule import Rule

#: Observations needed before a learned value replaces the configured initial.
MIN_LATENCIES = 20
MIN_GAPS = 8

#: While fewer than MIN_GAPS gaps are known, the idle timeout allows at least
#: this many times the longest gap seen (a slow peer's gaps, not a stall).
COLD_GAP_MULTIPLIER = 2.0
#: Progress events closer together than this are one burst, not a gap: a
#: read of many chunks must not teach the model that silence lasts 0 s.
GAP_RESOLUTION = 0.010

#: Backoff exponents beyond this cannot matter once clamped to ``max``.
_MAX_BACKOFF_STEPS = 64


@dataclass(frozen=True)
class Quantile:
    """
    A quantile read off censored data.

    ``exact`` is false when the quantile lies beyond every completed call
    (the remaining probability mass is all censored); ``value`` is then the
    largest completed latency, a lower bound.  ``censored_max`` is the
    longest censored wait in the window (0 if none).
    """

    value: float
    exact: bool
    censored_max: float


class LatencyEstimator:
    """
    Whole-call latencies of one key, completed or censored, in a ring of
    ``window`` observations.

    Quantiles cost a sort, so they are cached and refreshed only after
    ``window / 32`` new observations: the estimate of a tail quantile does not
    move measurably with one more sample, and a burst of calls must not pay
    O(window log window) each.
    """

    __slots__ = ("_cache", "_samples", "_version")

    def __init__(self, window: int) -> None:
        self._samples: deque[tuple[float, bool]] = deque(maxlen=window)
        self._version = 0
        self._cache: dict[float, tuple[int, Quantile]] = {}

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def window(self) -> int:
        return self._samples.maxlen or 0

    def observe(self, latency: float) -> None:
        """A call completed after ``latency`` seconds."""
        self._samples.append((latency, False))
        self._version += 1

    def censor(self, waited: float) -> None:
        """A call was given up (timed out, cancelled) after ``waited`` seconds."""
        self._samples.append((waited, True))
        self._version += 1

    def longest_completed(self) -> float:
        """The longest completed latency in the window (0 if none)."""
        return max((value for value, censored in self._samples if not censored), default=0.0)

    def quantile(self, q: float) -> Quantile:
        """The ``q`` quantile (0 < q < 1) of latency, from the Kaplan-Meier estimate."""
        cached = self._cache.get(q)
        refresh = max(1, len(self._samples) // 32)
        if cached is not None and self._version - cached[0] < refresh:
            return cached[1]
        result = _kaplan_meier_quantile(self._samples, q)
        self._cache[q] = (self._version, result)
        return result

    def export(self) -> list[list[float]]:
        return [[value, 1.0 if censored else 0.0] for value, censored in self._samples]

    def load(self, rows: list[Any]) -> None:
        for row in rows:
            value, censored = float(row[0]), bool(row[1])
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"bad latency {row!r}")
            self._samples.append((value, censored))
        self._version += 1
        self._cache.clear()


def _kaplan_meier_quantile(samples: deque[tuple[float, bool]], q: float) -> Quantile:
    # At equal times events sort before censorings, the usual convention:
    # a call censored at t was still running at t.
    ordered = sorted(samples)
    at_risk = len(ordered)
    survival = 1.0
    target = 1.0 - q + 1e-12
    last_event = 0.0
    censored_max = 0.0
    result: Quantile | None = None
    for value, censored in ordered:
        if censored:
            censored_max = value
        elif result is None:
            survival *= (at_risk - 1) / at_risk
            last_event = value
            if survival <= target:
                result = Quantile(value, True, 0.0)
        at_risk -= 1
    if result is not None:
        return Quantile(result.value, True, censored_max)
    return Quantile(last_event, False, censored_max)


class GapEstimator:
    """
    Gaps between progress events of one key, with running sums so the mean
    and standard deviation cost O(1) per event.

    The sums are recomputed from the ring every ``window`` events so that
    floating-point drift from add/subtract cannot accumulate.
    """

    __slots__ = ("_gaps", "_next", "_since_exact", "_sum", "_sumsq", "_window")

    def __init__(self, window: int) -> None:
        self._window = window
        self._gaps: list[float] = []
        self._next = 0
        self._sum = 0.0
        self._sumsq = 0.0
        self._since_exact = 0

    def __len__(self) -> int:
        return len(self._gaps)

    def observe(self, gap: float) -> None:
        gaps = self._gaps
        if len(gaps) < self._window:
            gaps.append(gap)
        else:
            old = gaps[self._next]
            gaps[self._next] = gap
            self._next = (self._next + 1) % self._window
            self._sum -= old
            self._sumsq -= old * old
        self._sum += gap
        self._sumsq += gap * gap
        self._since_exact += 1
        if self._since_exact >= self._window:
            self._sum = math.fsum(gaps)
            self._sumsq = math.fsum(g * g for g in gaps)
            self._since_exact = 0

    def timeout(self, threshold: float, min_std: float, pause: float) -> float | None:
        """
        The silence after which phi reaches ``threshold`` under a normal model
        of the gaps (as in Akka's detector), or None while cold.
        """
        n = len(self._gaps)
        if n < MIN_GAPS:
            return None
        mean = self._sum / n
        variance = max(0.0, self._sumsq / n - mean * mean)
        std = max(math.sqrt(variance), min_std)
        return mean + pause + _z(threshold) * std

    def longest(self) -> float:
        """The longest gap in the window (0 if none)."""
        return max(self._gaps, default=0.0)

    def export(self) -> list[float]:
        # Oldest first, so that a reload evicts in the same order.
        return self._gaps[self._next :] + self._gaps[: self._next]

    def load(self, gaps: list[Any]) -> None:
        for gap in gaps:
            value = float(gap)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"bad gap {gap!r}")
            self.observe(value)


@functools.lru_cache(maxsize=64)
def _z(threshold: float) -> float:
    """The standard normal quantile with upper tail ``10 ** -threshold``."""
    return -NormalDist().inv_cdf(10.0**-threshold)


def _proven(held: float, samples: LatencyEstimator, multiplier: float) -> float:
    """
    While a key is too cold to estimate a quantile, its limit is never below
    what completed calls prove is needed: a peer slower than the configured
    ``initial`` would otherwise time out on every call and, its calls all
    censored, never be learned.
    """
    return max(held, samples.longest_completed() * multiplier)


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


class KeyEstimator:
    """
    Everything learned about one (peer, kind), and the timeouts it implies
    under a `Rule`.

    ``timeouts`` counts consecutive timeouts for backoff; a completed call
    resets it.  Cancelled calls (a hedge loser, a state left) are censored
    observations but not timeouts: they say nothing against the peer.
    """

    __slots__ = (
        "_deadline_base",
        "_first_base",
        "_hedge_base",
        "first",
        "gaps",
        "latency",
        "timeouts",
    )

    def __init__(self, rule: Rule) -> None:
        self.latency = LatencyEstimator(rule.deadline.window)
        self.gaps = GapEstimator(rule.idle.window)
        # Time to a call's first sign of life (first progress, or completion
        # if that comes first): request upload, queueing and server think
        # time, which the gaps between chunks say nothing about.
        self.first = LatencyEstimator(rule.idle.window)
        self.timeouts = 0
        self._deadline_base = rule.deadline.initial
        self._first_base = rule.idle.initial
        self._hedge_base = rule.hedge.initial

    # -- what a call reports

    def completed(self, latency: float) -> None:
        self.latency.observe(latency)
        self.timeouts = 0

    def timed_out(self, waited: float) -> None:
        self.latency.censor(waited)
        self.timeouts += 1

    def cancelled(self, waited: float) -> None:
        self.latency.censor(waited)

    # -- what a call is allowed

    def backoff(self, rule: Rule) -> float:
        if not self.timeouts or rule.backoff == 1.0:
            return 1.0
        return float(rule.backoff ** min(self.timeouts, _MAX_BACKOFF_STEPS))

    def deadline(self, rule: Rule) -> float:
        """The whole-call deadline for the next call, in seconds."""
        d = rule.deadline
        if rule.policy == "fixed":
            return d.initial
        if rule.policy != "deadline":
            return d.max  # the hard limit under idle/hedge
        if len(self.latency) >= MIN_LATENCIES:
            self._deadline_base = self._learned(
                d.quantile, d.multiplier, self._deadline_base, d.initial
            )
        else:
            self._deadline_base = _proven(self._deadline_base, self.latency, d.multiplier)
        base = _clamp(self._deadline_base, d.min, d.max)
        return _clamp(base * self.backoff(rule), d.min, d.max)

    def idle_timeout(self, rule: Rule, backoff: float | None = None) -> float:
        """
        The silence after the last progress that declares a stall.

        ``backoff`` is the factor a call was started with: timeouts of
        *other* calls to the peer after that must not stretch it (four calls
        stalled together would otherwise be detected at 1x, 1.5x, 2.25x...).
        """
        i = rule.idle
        learned = self.gaps.timeout(i.threshold, i.min_std, i.acceptable_pause)
        if learned is None:  # cold: never less than the gaps already seen
            learned = max(i.initial, self.gaps.longest() * COLD_GAP_MULTIPLIER)
        base = learned
        factor = self.backoff(rule) if backoff is None else backoff
        return _clamp(_clamp(base, i.min, i.max) * factor, i.min, i.max)

    def first_progress_timeout(self, rule: Rule, backoff: float | None = None) -> float:
        """
        The silence before a call's first sign of life that declares a stall.

        Learned like the deadline (a censored quantile times the multiplier)
        from how long calls took to show a first sign of life, within the
        idle bounds; ``idle.initial`` while cold.
        """
        i, d = rule.idle, rule.deadline
        if len(self.first) >= MIN_LATENCIES:
            self._first_base = self._learned(
                d.quantile, d.multiplier, self._first_base, i.initial, self.first
            )
        else:
            self._first_base = _proven(self._first_base, self.first, d.multiplier)
        factor = self.backoff(rule) if backoff is None else backoff
        return _clamp(_clamp(self._first_base, i.min, i.max) * factor, i.min, i.max)

    def hedge_delay(self, rule: Rule) -> float:
        """How long the primary may run before a backup is started."""
        h = rule.hedge
        if len(self.latency) >= MIN_LATENCIES:
            self._hedge_base = self._learned(h.quantile, 1.0, self._hedge_base, h.initial)
        return _clamp(self._hedge_base, h.min, h.max)

    def _learned(
        self,
        q: float,
        multiplier: float,
        held: float,
        initial: float,
        samples: LatencyEstimator | None = None,
    ) -> float:
        # Exact quantile: use it.  Unknown (the tail is censored): never go
        # below what completed calls prove is needed, never above both the
        # previous value and the censoring points (so timeouts alone cannot
        # ratchet it up, and a censored slow minority cannot collapse it).
        samples = self.latency if samples is None else samples
        est = samples.quantile(q)
        if est.exact:
            learned = est.value * multiplier
        else:
            learned = max(est.value * multiplier, min(est.censored_max, held))
        # A q quantile means nothing from fewer than 1/(1-q) calls (p99.9 of
        # 20 fast calls is just the fastest majority): until the window holds
        # that many, the estimate may rise above ``initial`` but not below.
        needed = min(math.ceil(1.0 / (1.0 - q)), samples.window)
        if len(samples) < needed:
            learned = max(learned, initial)
        return learned

    # -- persistence

    def export(self) -> dict[str, Any]:
        return {
            "latency": self.latency.export(),
            "gaps": self.gaps.export(),
            "first": self.first.export(),
            "timeouts": self.timeouts,
            "deadline_base": self._deadline_base,
            "hedge_base": self._hedge_base,
            "first_base": self._first_base,
        }

    @classmethod
    def load(cls, rule: Rule, state: Any) -> KeyEstimator:
        if not isinstance(state, dict):
            raise ValueError(f"expected an object, got {state!r}")
        est = cls(rule)
        est.latency.load(list(state.get("latency", [])))
        est.gaps.load(list(state.get("gaps", [])))
        est.first.load(list(state.get("first", [])))
        timeouts = state.get("timeouts", 0)
        if not isinstance(timeouts, int) or timeouts < 0:
            raise ValueError(f"bad timeouts count {timeouts!r}")
        est.timeouts = timeouts
        for name in ("deadline_base", "hedge_base", "first_base"):
            value = float(state.get(name, getattr(est, "_" + name)))
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"bad {name} {value!r}")
            setattr(est, "_" + name, value)
        return est
