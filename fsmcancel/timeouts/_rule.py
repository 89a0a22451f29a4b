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
    The progress (idle) timeout: phi accrual on the gaps between progress
    events.  A stall is declared when the silence since the last progress
    reaches the gap whose phi is ``threshold``, i.e. ``mean + acceptable_pause
    + z(threshold) * max(std, min_std)``, kept within ``min``..``max``.
    """

    initial: float
    min: float
    max: float
    threshold: float
    min_std: float
    acceptable_pause: float
    window: int


@dataclass(frozen=True)
class HedgeRule:
    """
    Hedging: after the peer's ``quantile`` latency (within ``min``..``max``;
    ``initial`` when cold) start the same call on the next peer.  ``budget``
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
class Rule:
    """
    Everything that decides how one (kind, peer) call is guarded.

    ``backoff`` multiplies the deadline and idle timeout after each
    consecutive timeout of the key (1 disables backoff); the result is still
    clamped to the section's ``max``.
    """

    policy: Policy
    backoff: float
    deadline: DeadlineRule
    idle: IdleRule
    hedge: HedgeRule


def _number(value: float) -> str:
    return f"{value:g}"


def _percentile(quantile: float) -> str:
    return f"p{round(quantile * 100, 4):g}"


def label(rule: Rule) -> str:
    """
    A short description of ``rule`` for diagrams, e.g. ``idle φ>8, 1s..30s``.
    """
    d, i, h = rule.deadline, rule.idle, rule.hedge
    idle = f"idle φ>{_number(i.threshold)}, {format_duration(i.min)}..{format_duration(i.max)}"
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
