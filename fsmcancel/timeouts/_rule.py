"""
The resolved timeout rule for one (call kind, peer): plain frozen values.

`TimeoutConfig` stores layers (defaults, file, environment; per kind, per
peer) because ``fsmcancel timeouts show`` must say where each value came
from.  The code that arms timers must not care about any of that, so the
layers are flattened into a `Rule` once per key and the hot path only reads
attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsmcancel.timeouts._duration import format_duration

Policy = Literal["fixed", "deadline", "idle", "hedge"]
POLICIES: tuple[Policy, ...] = ("fixed", "deadline", "idle", "hedge")


@dataclass(frozen=True)
class DeadlineRule:
    """
    The whole-call deadline: ``quantile`` of observed latencies times
    ``multiplier``, within ``min``..``max``; ``initial`` until enough calls
    were observed (and the fixed value under the ``fixed`` policy).  ``max``
    is also the hard limit of a call under the ``idle`` and ``hedge``
    policies, which is why its default is generous.
    """

    initial: float
    min: float
    max: float
    quantile: float
    multiplier: float
    window: int


@dataclass(frozen=True)
class IdleRule:
    """
    The silence (idle) limit: a stall is declared when a call has been
    silent for ``multiplier`` times the ``quantile`` of the silences live
    calls of this kind showed: before their first sign of life, or between
    two progress events.  Within ``min``..``max``; ``initial`` while the
    whole kind is new.  ``window`` is about how many recent silences of a
    peer the estimate follows (the kind's pool follows ten times as many).
    """

    initial: float
    min: float
    max: float
    quantile: float
    multiplier: float
    window: int


@dataclass(frozen=True)
class HedgeRule:
    """
    Hedging: once an attempt has been silent for longer than the
    ``quantile`` of the silences live calls show (before their first sign
    of life, or between two progress events; within ``min``..``max``,
    ``initial`` while the kind is new), start the same call on the next
    peer, and keep the first running.  ``budget``
    caps backups as a share of calls; ``burst`` backups may be spent before
    any budget was earned, so a cold process can hedge at all.
    """

    initial: float
    min: float
    max: float
    quantile: float
    budget: float
    burst: int


@dataclass(frozen=True)
class HealthRule:
    """
    When a peer is suspect, and how it is probed.  ``suspect_after``
    consecutive stalls (with no sign of life between them) make a peer
    suspect; its first probe is due ``probe_interval`` later, and each probe
    that stalls again multiplies the interval by the rule's ``backoff``, up
    to ``probe_max``.  A probe of a peer never seen alive, and the one
    exploratory call after a timeout of a peer that is alive, get
    ``probe_multiplier`` times the usual silence limit: the only way to
    learn a peer slower than its kind.
    """

    suspect_after: int
    probe_interval: float
    probe_max: float
    probe_multiplier: float


@dataclass(frozen=True)
class Rule:
    """
    Everything that decides how one (kind, peer) call is guarded.

    ``backoff`` multiplies a suspect peer's probe interval after each probe
    that stalls (1 keeps it constant).  It never lengthens a call's limit:
    a dead peer is detected as fast on its tenth call as on its first.
    """

    policy: Policy
    backoff: float
    deadline: DeadlineRule
    idle: IdleRule
    hedge: HedgeRule
    health: HealthRule


def _number(value: float) -> str:
    return f"{value:g}"


def _percentile(quantile: float) -> str:
    return f"p{round(quantile * 100, 4):g}"


def label(rule: Rule) -> str:
    """
    A short description of ``rule`` for diagrams, e.g. ``idle p99x3.5, 1s..30s``
    (with a multiplication sign).
    """
    d, i, h = rule.deadline, rule.idle, rule.hedge
    idle = (
        f"idle {_percentile(i.quantile)}\u00d7{_number(i.multiplier)}, "
        f"{format_duration(i.min)}..{format_duration(i.max)}"
    )
    if rule.policy == "fixed":
        return f"fixed {format_duration(d.initial)}"
    if rule.policy == "deadline":
        return (
            f"deadline {_percentile(d.quantile)}\u00d7{_number(d.multiplier)}, "
            f"{format_duration(d.min)}..{format_duration(d.max)}"
        )
    if rule.policy == "idle":
        return idle
    return f"hedge {_percentile(h.quantile)} ≤{_number(h.budget * 100)}%, {idle}"
