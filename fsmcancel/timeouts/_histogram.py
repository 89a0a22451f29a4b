"""
Decayed log-scale histograms: how fsmcancel remembers a distribution of
durations (times to a first sign of life, gaps between progress events,
whole-call latencies).

Why a histogram and not a ring of samples:

* *Pooling.*  A new peer's first call must get a limit from what the other
  peers of its kind have taught.  Histograms add: the limit is read off the
  peer's own histogram plus the kind's, the kind's scaled down to a fixed
  number of pseudo-observations (`quantile` takes weighted parts), so a peer
  with many samples of its own is judged mostly by them, and a new one by
  its kind.
* *Heavy tails.*  The tail is kept as observed, at a resolution of
  ``10 ** (1 / BINS_PER_DECADE)`` (6%), from 100 us to days; no normal (or
  any other) fit is imposed on it, so Pareto-tailed pauses show up as what
  they are.
* *Cost.*  `add` is O(1) (a logarithm and a dict update), memory is bounded
  by the number of distinct bins (a few dozen in practice), and ageing is
  amortised O(1): every ``half_life`` observations every count is halved, so
  the estimate follows a changing peer (a regime shift) within about
  ``half_life`` calls.
* *Censoring.*  A call given up after ``t`` (cancelled by its caller, lost a
  hedge race) says "longer than ``t``", not "``t``".  Such observations are
  kept apart and quantiles are read off the Kaplan-Meier estimate, so they
  neither collapse the estimate onto the fast calls nor inflate it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

BINS_PER_DECADE = 40
#: Durations below this share bin 0 (a stream read in one reactor turn).
LOW = 1e-4
# Bins are read off log2: math.log2 takes one argument, and math.log's
# optional base makes it a third of a progress event's cost.
_SCALE = BINS_PER_DECADE / math.log2(10.0)
_LOG_LOW = math.log2(LOW)
#: Bins beyond this (about 11 days) are clamped: nothing waits that long.
MAX_BIN = 10 * BINS_PER_DECADE
#: Halved counts below this are dropped, so memory stays bounded.
_NEGLIGIBLE = 1e-3


def bin_of(seconds: float, _log: Any = math.log2) -> int:
    """The bin holding ``seconds``."""
    if seconds <= LOW:
        return 0
    i = int((_log(seconds) - _LOG_LOW) * _SCALE)
    return i if i < MAX_BIN else MAX_BIN


def upper(b: int) -> float:
    """
    The upper edge of bin ``b``: quantiles are reported at bin upper edges,
    so an estimate errs (by at most 6%) on the side of waiting longer.
    """
    return float(LOW * 10.0 ** ((b + 1) / BINS_PER_DECADE))


class Histogram:
    """
    Completed (``events``) and censored observations, by bin, with counts
    halved every ``half_life`` observations.  `total` is the decayed count
    of both; ``seen`` counts every observation ever (it says how much
    evidence there has been, which ageing must not forget).
    """

    __slots__ = ("censored", "events", "half_life", "halve_at", "seen")

    def __init__(self, half_life: int) -> None:
        self.half_life = half_life
        self.events: dict[int, float] = {}
        self.censored: dict[int, float] = {}
        self.seen = 0
        #: ``seen`` at which every count is next halved.
        self.halve_at = half_life

    def add(self, seconds: float) -> None:
        """A duration observed in full."""
        self.add_bin(bin_of(seconds))

    def add_bin(self, b: int) -> None:
        """An observation in bin ``b`` (see `bin_of`)."""
        events = self.events
        events[b] = events.get(b, 0.0) + 1.0
        self.seen += 1
        if self.seen >= self.halve_at:
            self.halve()

    def censor(self, seconds: float) -> None:
        """A duration known only to exceed ``seconds``."""
        b = bin_of(seconds)
        self.censored[b] = self.censored.get(b, 0.0) + 1.0
        self.seen += 1
        if self.seen >= self.halve_at:
            self.halve()

    def halve(self) -> None:
        """Age: halve every count (amortised O(1): once per ``half_life``)."""
        self.halve_at = self.seen + self.half_life
        for counts in (self.events, self.censored):
            for b in list(counts):
                value = counts[b] * 0.5
                if value < _NEGLIGIBLE:
                    del counts[b]
                else:
                    counts[b] = value

    @property
    def total(self) -> float:
        """
        The decayed count of every observation.  Summed when read (once per
        limit computed), so that a progress event does not pay for it.
        """
        return math.fsum(self.events.values()) + math.fsum(self.censored.values())

    def longest(self) -> float:
        """Upper edge of the highest bin with a completed observation (0 if none)."""
        return upper(max(self.events)) if self.events else 0.0

    # -- persistence

    def export(self) -> dict[str, Any]:
        return {
            "events": {str(b): round(c, 6) for b, c in sorted(self.events.items())},
            "censored": {str(b): round(c, 6) for b, c in sorted(self.censored.items())},
            "seen": self.seen,
        }

    @classmethod
    def load(cls, half_life: int, data: object, where: str) -> Histogram:
        """Rebuild from `export` output; ``ValueError`` names ``where`` and what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected an object, got {data!r}")
        h = cls(half_life)
        for name in ("events", "censored"):
            counts = data.get(name, {})
            if not isinstance(counts, Mapping):
                raise ValueError(f"{where}.{name}: expected an object, got {counts!r}")
            for key, count in counts.items():
                try:
                    b = int(key)
                except (TypeError, ValueError):
                    raise ValueError(f"{where}.{name}: bin {key!r} is not an integer") from None
                if not 0 <= b <= MAX_BIN:
                    raise ValueError(f"{where}.{name}: bin {b} is outside 0..{MAX_BIN}")
                if isinstance(count, bool) or not isinstance(count, (int, float)):
                    raise ValueError(f"{where}.{name}[{key}]: count {count!r} is not a number")
                if not math.isfinite(count) or count < 0:
                    raise ValueError(f"{where}.{name}[{key}]: bad count {count!r}")
                getattr(h, name)[b] = float(count)
        seen = data.get("seen", 0)
        if isinstance(seen, bool) or not isinstance(seen, int) or seen < 0:
            raise ValueError(f"{where}.seen: expected a non-negative integer, got {seen!r}")
        h.seen = seen
        h.halve_at = seen + half_life
        return h


def quantile(parts: Sequence[tuple[Histogram, float]], q: float) -> tuple[float, bool]:
    """
    The ``q`` quantile (0 < q < 1) of the weighted sum of ``parts``, from
    the Kaplan-Meier estimate of the survival function.

    Returns ``(value, exact)``.  ``exact`` is false when the quantile lies
    beyond every completed observation (what remains is censored); ``value``
    is then the longest completed observation, a lower bound (0 if none).
    """
    at_risk = 0.0
    bins: set[int] = set()
    for h, w in parts:
        if w > 0:
            at_risk += h.total * w
            bins.update(h.events)
            bins.update(h.censored)
    if at_risk <= 0:
        return 0.0, False
    survival = 1.0
    target = 1.0 - q + 1e-12
    last = 0.0
    for b in sorted(bins):
        died = 0.0
        left = 0.0
        for h, w in parts:
            if w > 0:
                died += h.events.get(b, 0.0) * w
                left += h.censored.get(b, 0.0) * w
        # Events before censorings at the same time: a call censored at t
        # was still running at t.
        if died > 0 and at_risk > 0:
            survival *= max(0.0, 1.0 - died / at_risk)
            last = upper(b)
            if survival <= target:
                return last, True
        at_risk -= died + left
    return last, False
