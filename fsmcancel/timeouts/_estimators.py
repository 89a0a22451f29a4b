"""
What fsmcancel learns about one call kind (`Pool`) and one (kind, peer)
(`KeyEstimator`), and the limits that follows (`Limit`).

Three populations, kept apart because mixing them is what breaks adaptive
timeouts (see the notes on stall detection):

* **Live silences**: how long live calls stay silent before their first sign
  of life, and between two progress events.  The idle limit is
  ``multiplier`` times their ``quantile``.
* **Stalls**: calls given up at their limit.  They are counted (the stall
  share, peer health) and *never* enter the live estimates.  Recording them
  as latencies would ratchet the limit up to the cap; and because a stall
  is its own population, the live estimate stays identifiable however
  frequent stalls are: it is never "held" waiting for a censored quantile
  that cannot be reached.
* **Censored live calls**: calls their caller cancelled (a state left, a
  hedge lost) after ``t``.  They enter the live estimate as "longer than
  ``t``" (Kaplan-Meier), so cancelling slow calls does not make slow calls
  look rare.

Collapse onto the fast majority is prevented by the multiplier: a live call
slower than the estimated quantile but inside the limit completes and is
learned, so an estimate that is too low rises.  A peer whose live calls are
*all* beyond the limit cannot be told from a dead one by waiting; it is
learned by a generous probe (see ``_health``) or a hedged call whose slow
attempt is kept running.

**Learning from the kind.**  A peer's estimate reads its own histogram plus
its kind's (the pool, which holds every peer's observations, its own
included), each weighted by its sample count: a new peer of a known kind
gets the kind's limit on its first call.  A tail quantile of one peer's
couple of hundred calls is one or two samples, so the tail comes from the
pool; a peer's own samples count twice, enough for a peer that is
consistently slower than its kind to show at the p99.9 after a few calls,
not enough for one unlucky pause to set a peer's limit for hundreds of
calls.  The configured ``initial``
applies only while the whole kind has seen fewer than ``MIN_SAMPLES``
observations, and then fades as the kind's evidence grows.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from math import log2 as _log
from typing import Any

from fsmcancel.timeouts._histogram import (
    _LOG_LOW,
    _SCALE,
    LOW,
    MAX_BIN,
    Histogram,
    bin_of,
    quantile,
)
from fsmcancel.timeouts._rule import Rule

#: Observations of the whole kind before anything learned replaces ``initial``.
MIN_SAMPLES = 20
#: The pool of a kind follows this many times more observations than a peer.
POOL_SPAN = 10
#: Standard normal quantile of the one-sided 90% confidence bound on a
#: learned quantile.
CONFIDENCE = 1.2816
#: Calls that get a generous limit once exploring is called for: a slow mode
#: that is a third of a peer's calls is met within five with 87% chance.
EXPLORE_CALLS = 5


@dataclass(frozen=True)
class Limit:
    """
    A limit, in seconds, and why it is what it is.

    ``source`` is ``"initial"`` (the configured cold value: the kind is
    new), ``"prior"`` (mostly what other peers of the kind taught),
    ``"learned"`` (mostly this peer's own calls), ``"fixed"``, or, for a
    call about to start, ``"probe"`` / ``"explore"`` (a generous limit to
    learn a peer slower than its kind).
    """

    seconds: float
    source: str
    why: str

    def scaled(self, factor: float, high: float, source: str, why: str) -> Limit:
        return Limit(min(self.seconds * factor, max(high, self.seconds)), source, why)


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


#: Weight of the newest call in a peer's recent stall share, and in its
#: kind's long-run share.
RECENT = 0.05
LONG_RUN = 0.002


class Pool:
    """What every peer of one kind has taught: the kind's prior."""

    __slots__ = ("calls", "first", "gaps", "latency", "share", "stalls")

    def __init__(self, rule: Rule) -> None:
        self.first = Histogram(rule.idle.window * POOL_SPAN)
        self.gaps = Histogram(rule.idle.window * POOL_SPAN)
        self.latency = Histogram(rule.deadline.window * POOL_SPAN)
        self.calls = 0
        self.stalls = 0
        self.share = 0.0  # long-run stall share

    def export(self) -> dict[str, Any]:
        return {
            "first": self.first.export(),
            "gaps": self.gaps.export(),
            "latency": self.latency.export(),
            "calls": self.calls,
            "stalls": self.stalls,
            "share": self.share,
        }

    @classmethod
    def load(cls, rule: Rule, data: Any, where: str) -> Pool:
        pool = cls(rule)
        _load_into(pool, data, where, POOL_SPAN)
        return pool


def _load_into(target: Pool | KeyEstimator, data: Any, where: str, span: int) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {data!r}")
    for name in ("first", "gaps", "latency"):
        old: Histogram = getattr(target, name)
        setattr(target, name, Histogram.load(old.half_life, data.get(name, {}), f"{where}.{name}"))
    for name in ("calls", "stalls"):
        value = data.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}.{name}: expected a non-negative integer, got {value!r}")
        setattr(target, name, value)
    share = data.get("share", 0.0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ValueError(f"{where}.share: expected a share between 0 and 1, got {share!r}")
    target.share = float(share)


class KeyEstimator:
    """
    Everything learned about one (kind, peer), and the limits it implies
    under its `Rule`.  Every observation also feeds the kind's `Pool`.

    ``explore`` (a number of calls) is set when a call of this key answers after some of its
    calls timed out, and more of them timed out recently (``share``) than
    stalls of the kind explain (its long-run share): the peer is alive, so
    those timeouts may have been live calls slower than the limit (a peer
    slower than its kind, a regime shift), and the next call gets a
    generous limit to find out (see `Timeouts`).
    """

    __slots__ = (
        "_cache",
        "calls",
        "explore",
        "first",
        "gaps",
        "latency",
        "pool",
        "pool_gaps",
        "share",
        "stalls",
        "timed_out_since_alive",
    )

    def __init__(self, rule: Rule, pool: Pool) -> None:
        self.pool = pool
        self.pool_gaps = pool.gaps  # per chunk: one attribute away, not two
        self.first = Histogram(rule.idle.window)
        self.gaps = Histogram(rule.idle.window)
        self.latency = Histogram(rule.deadline.window)
        self.calls = 0
        self.stalls = 0
        self.explore = 0
        self.timed_out_since_alive = False
        self.share = 0.0  # recent stall share
        self._cache: dict[str, tuple[int, int, Limit]] = {}

    # -- what a call reports (GuardedCall calls these)

    def first_sign(self, seconds: float) -> None:
        """Time from the request to the call's first sign of life."""
        b = bin_of(seconds)
        self.first.add_bin(b)
        self.pool.first.add_bin(b)
        self._alive()

    def gap(self, seconds: float) -> None:
        """
        Silence between two progress events of a live call (or from the
        last one to its answer).  Called per chunk, so the bin is computed
        once for both histograms.
        """
        b = 0 if seconds <= LOW else int((_log(seconds) - _LOG_LOW) * _SCALE)
        if b > MAX_BIN:
            b = MAX_BIN
        # Histogram.add_bin, inlined for both: a method call is a quarter
        # of the cost of a progress event.  After the first few events of a
        # key the bin exists: indexing it beats ``dict.get``.
        h = self.gaps
        try:
            h.events[b] += 1.0
        except KeyError:
            h.events[b] = 1.0
        h.seen += 1
        if h.seen >= h.halve_at:
            h.halve()
        h = self.pool_gaps
        try:
            h.events[b] += 1.0
        except KeyError:
            h.events[b] = 1.0
        h.seen += 1
        if h.seen >= h.halve_at:
            h.halve()

    def completed(self, latency: float) -> None:
        self.latency.add(latency)
        self.pool.latency.add(latency)
        self.answered()

    def answered(self) -> None:
        """The call ended with an answer (a result or an error reply)."""
        self._count(0.0)
        self._alive()

    def _alive(self) -> None:
        # A sign of life after timeouts: were they live calls slower than
        # the limit?  One timeout in the last twenty calls is a stall's bad
        # luck; two or more, beyond what the kind's stalls explain, is news.
        if self.timed_out_since_alive:
            self.timed_out_since_alive = False
            if self.share > 3 * self.pool.share + 0.06:
                self.explore = EXPLORE_CALLS

    def stalled(self) -> None:
        """The call was given up at its limit: the stall population."""
        self._count(1.0)
        self.stalls += 1
        self.pool.stalls += 1
        self.timed_out_since_alive = True

    def _count(self, stalled: float) -> None:
        self.calls += 1
        self.pool.calls += 1
        self.share += RECENT * (stalled - self.share)
        self.pool.share += LONG_RUN * (stalled - self.pool.share)

    def cancelled(self, waited: float, silence: float | None) -> None:
        """
        The caller gave the call up after ``waited``: censored, live.
        ``silence`` is how long it had been silent since its last progress
        event (None if it never showed a sign of life).
        """
        self.latency.censor(waited)
        self.pool.latency.censor(waited)
        if silence is None:
            self.first.censor(waited)
            self.pool.first.censor(waited)
        elif silence > 0:
            self.gaps.censor(silence)
            self.pool.gaps.censor(silence)

    # -- limits

    def silence_limit(self, rule: Rule, progressed: bool) -> Limit:
        """
        The silence that declares a stall: before the first sign of life
        (``progressed`` false), or since the last progress event.
        """
        if rule.policy in ("fixed", "deadline"):
            d = self.deadline(rule)
            return Limit(rule.deadline.max, d.source, "no silence limit under this policy")
        i = rule.idle
        if progressed:
            own, pooled, name, what = self.gaps, self.pool.gaps, "gaps", "between progress events"
        else:
            own, pooled, name, what = self.first, self.pool.first, "first", "before the first sign"
        return self._limit(name, own, pooled, i.quantile, i.multiplier, i.initial, i.min, i.max,
                           f"silence {what}")  # fmt: skip

    def deadline(self, rule: Rule) -> Limit:
        """The whole-call limit for the next call."""
        d = rule.deadline
        if rule.policy == "fixed":
            return Limit(d.initial, "fixed", "policy fixed: deadline.initial")
        if rule.policy != "deadline":
            return Limit(d.max, "fixed", "the hard limit of a call (deadline.max)")
        return self._limit("latency", self.latency, self.pool.latency, d.quantile, d.multiplier,
                           d.initial, d.min, d.max, "whole-call latency")  # fmt: skip

    def hedge_delay(self, rule: Rule, progressed: bool) -> Limit:
        """How long an attempt may stay silent before a backup is started."""
        h = rule.hedge
        own, pooled = (self.gaps, self.pool.gaps) if progressed else (self.first, self.pool.first)
        what = "gap" if progressed else "first-sign"
        return self._limit(f"hedge-{what}", own, pooled, h.quantile, 1.0, h.initial, h.min, h.max,
                           f"{what} silence")  # fmt: skip

    def _limit(
        self,
        name: str,
        own: Histogram,
        pooled: Histogram,
        q: float,
        multiplier: float,
        initial: float,
        low: float,
        high: float,
        what: str,
    ) -> Limit:
        # A tail quantile does not move measurably with one more sample:
        # recompute after about 1/16 more observations of the peer or kind.
        cached = self._cache.get(name)
        if (
            cached is not None
            and own.seen - cached[0] <= own.seen >> 4
            and pooled.seen - cached[1] <= pooled.seen >> 4
        ):
            return cached[2]
        limit = learn(own, pooled, q, multiplier, initial, low, high, what)
        self._cache[name] = (own.seen, pooled.seen, limit)
        return limit

    # -- persistence

    def export(self) -> dict[str, Any]:
        return {
            "first": self.first.export(),
            "gaps": self.gaps.export(),
            "latency": self.latency.export(),
            "calls": self.calls,
            "stalls": self.stalls,
            "share": self.share,
            "explore": self.explore,
        }

    @classmethod
    def load(cls, rule: Rule, pool: Pool, data: Any, where: str) -> KeyEstimator:
        est = cls(rule, pool)
        _load_into(est, data, where, 1)
        explore = data.get("explore", 0)
        if isinstance(explore, bool) or not isinstance(explore, int) or explore < 0:
            raise ValueError(f"{where}.explore: expected a number of calls, got {explore!r}")
        est.explore = explore
        return est


def _percent(q: float) -> str:
    return f"p{round(q * 100, 4):g}"


@functools.lru_cache(maxsize=32)
def enough(q: float) -> float:
    """
    Observations from which the `CONFIDENCE` upper bound on the ``q``
    quantile lies inside the data: the smallest ``n`` with
    ``q + z sqrt(q (1 - q) / n) <= 1 - 1 / n``.
    """
    b = CONFIDENCE * math.sqrt(q * (1.0 - q))
    x = (-b + math.sqrt(b * b + 4.0 * (1.0 - q))) / 2.0  # x = 1 / sqrt(n)
    return 1.0 / (x * x)


def learn(
    own: Histogram,
    pooled: Histogram,
    q: float,
    multiplier: float,
    initial: float,
    low: float,
    high: float,
    what: str,
) -> Limit:
    """
    ``multiplier`` times the ``q`` quantile of ``own`` plus ``pooled``,
    within ``low``..``high``.

    While the kind has seen fewer than `MIN_SAMPLES` observations, or none
    completed, the limit is ``initial``.  The quantile read is a 90% upper
    confidence bound on ``q``; until the kind has enough observations for
    that bound to lie inside the data (`enough`: 333 at p99), it lies beyond
    the longest call seen, which says little, and ``initial`` still bounds
    the limit from below, fading linearly to nothing by then.
    """
    n = pooled.seen
    if n < MIN_SAMPLES or not pooled.events:
        # Never below what completed calls prove is needed: a kind slower
        # than ``initial`` would otherwise time out on every call and, its
        # calls all stalls, never be learned.
        proven = max(own.longest(), pooled.longest()) * multiplier
        why = f"{what}: the kind is new ({n} observations, {MIN_SAMPLES} needed)"
        if proven > initial:
            why += f"; {multiplier:g} x the longest seen, {proven / multiplier:.3g}s"
        return Limit(_clamp(max(initial, proven), low, high), "initial", why)
    # An upper confidence bound on the quantile, not the point estimate: the
    # p99 of 150 calls is their second largest, too low as often as not.
    total = own.total + pooled.total
    q_upper = min(1.0 - 0.5 / total, q + CONFIDENCE * math.sqrt(q * (1.0 - q) / total))
    value, exact = quantile(((own, 1.0), (pooled, 1.0)), max(q, q_upper))
    learned = value * multiplier
    own_share = own.seen / n  # of the kind's observations, this peer's
    source = "learned" if own_share >= 0.5 else "prior"
    bound = "" if exact else " (beyond every completed call: the longest)"
    why = (
        f"{what}: {multiplier:g} x {_percent(q)} {value:.3g}s{bound} of {own.seen} own and "
        f"{n} kind observations ({own_share:.0%} own)"
    )
    fading = initial * (1.0 - n / enough(q))
    if fading > learned:
        why = (
            f"{what}: initial {initial:g}s fading as the kind's observations accumulate, "
            f"{fading:.3g}s after {n} (learned: {learned:.3g}s)"
        )
        learned, source = fading, "initial"
    clamped = _clamp(learned, low, high)
    if clamped != learned:
        why += f"; clamped to {low:g}s..{high:g}s"
    return Limit(clamped, source, why)
