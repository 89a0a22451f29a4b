"""
One schema for every timeout knob, and the validated configuration it
describes (`TimeoutConfig`); ``_loading`` reads it from TOML, a dict and the
environment.

The configuration is layered (defaults < file < dict < environment, and
within each, ``default`` < ``kinds.<kind>`` < ``peers.<peer>``) and every
value remembers its source, because the first question an operator asks
about a surprising timeout is "where did that number come from?".  Loading
either returns a complete immutable `TimeoutConfig` or raises `ConfigError`
listing every problem: a half-applied configuration would be a timeout
nobody chose.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from fsmcancel.timeouts._duration import format_duration, parse_duration
from fsmcancel.timeouts._rule import (
    POLICIES,
    DeadlineRule,
    HealthRule,
    HedgeRule,
    IdleRule,
    Policy,
    Rule,
    label,
)

ENV_PREFIX: Final = "FSMCANCEL_TIMEOUTS__"


@dataclass(frozen=True)
class Problem:
    """One bad value: where it is (a dotted key path or variable) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(ValueError):
    """
    The configuration is invalid; ``problems`` lists every reason, each
    naming the key path (or environment variable) and the bad value.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid timeout configuration:\n{lines}")


@dataclass(frozen=True)
class _Knob:
    parse: Callable[[object], object]
    default: object
    doc: str


def _duration(positive: bool) -> Callable[[object], object]:
    def parse(raw: object) -> object:
        seconds = parse_duration(raw)
        if positive and seconds <= 0:
            raise ValueError(f"{raw!r} must be greater than zero")
        return seconds

    return parse


def _real(
    low: float, high: float | None, *, open_low: bool, open_high: bool = True
) -> Callable[[object], object]:
    def parse(raw: object) -> object:
        if isinstance(raw, str):
            try:
                raw = float(raw)
            except ValueError:
                raise ValueError(f"expected a number, got {raw!r}") from None
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ValueError(f"expected a number, got {type(raw).__name__} {raw!r}")
        value = float(raw)
        too_low = value <= low if open_low else value < low
        too_high = high is not None and (value >= high if open_high else value > high)
        if too_low or too_high or value != value:
            lo = f"{'(' if open_low else '['}{low:g}"
            hi = f"{high:g}{')' if open_high else ']'}" if high is not None else "∞)"
            raise ValueError(f"{raw!r} is outside {lo}, {hi}")
        return value

    return parse


def _integer(low: int) -> Callable[[object], object]:
    def parse(raw: object) -> object:
        if isinstance(raw, str) and re.fullmatch(r"[+-]?\d+", raw.strip()):
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"expected an integer, got {type(raw).__name__} {raw!r}")
        if raw < low:
            raise ValueError(f"{raw!r} must be at least {low}")
        return raw

    return parse


def _policy(raw: object) -> object:
    if not isinstance(raw, str):
        raise ValueError(f"expected a policy name, got {type(raw).__name__} {raw!r}")
    name = raw.strip().lower()
    if name not in POLICIES:
        hint = difflib.get_close_matches(name, POLICIES, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown policy {raw!r} (one of {', '.join(POLICIES)}){suggestion}")
    return name


#: Every knob of a rule table, by dotted path, with its default.
KNOBS: Final[Mapping[str, _Knob]] = MappingProxyType(
    {
        "policy": _Knob(_policy, "idle", "fixed | deadline | idle | hedge"),
        "backoff": _Knob(
            _real(1.0, None, open_low=False), 2.0, "probe interval multiplier per failed probe"
        ),
        "deadline.initial": _Knob(_duration(True), 10.0, "cold-start (and fixed) deadline"),
        "deadline.min": _Knob(_duration(True), 0.25, "lowest adaptive deadline"),
        "deadline.max": _Knob(_duration(True), 1800.0, "highest deadline; hard limit of a call"),
        "deadline.quantile": _Knob(
            _real(0.0, 1.0, open_low=True), 0.999, "latency quantile the deadline follows"
        ),
        "deadline.multiplier": _Knob(
            _real(1.0, None, open_low=False), 2.0, "deadline = quantile * multiplier"
        ),
        "deadline.window": _Knob(_integer(16), 1000, "latencies kept per key"),
        "idle.initial": _Knob(_duration(True), 3.0, "idle limit while the kind is new"),
        "idle.min": _Knob(_duration(True), 1.0, "lowest idle timeout"),
        "idle.max": _Knob(_duration(True), 30.0, "highest idle timeout"),
        "idle.quantile": _Knob(
            _real(0.0, 1.0, open_low=True), 0.99, "silence quantile of live calls the limit follows"
        ),
        "idle.multiplier": _Knob(
            _real(1.0, None, open_low=False), 3.5, "idle limit = quantile * multiplier"
        ),
        "idle.window": _Knob(_integer(4), 200, "silences a peer's estimate follows"),
        "hedge.initial": _Knob(_duration(True), 1.0, "cold-start hedge delay"),
        "hedge.min": _Knob(_duration(True), 0.01, "lowest hedge delay"),
        "hedge.max": _Knob(_duration(True), 10.0, "highest hedge delay"),
        "hedge.quantile": _Knob(
            _real(0.0, 1.0, open_low=True), 0.95, "latency quantile after which to hedge"
        ),
        "hedge.budget": _Knob(
            _real(0.0, 1.0, open_low=False, open_high=False),
            0.05,
            "backups allowed as a share of calls",
        ),
        "hedge.burst": _Knob(_integer(0), 10, "backups allowed before any budget is earned"),
        "health.suspect_after": _Knob(
            _integer(1), 2, "consecutive stalls that make a peer suspect"
        ),
        "health.probe_interval": _Knob(_duration(True), 10.0, "wait before probing a suspect peer"),
        "health.probe_max": _Knob(_duration(True), 300.0, "longest wait between probes"),
        "health.probe_multiplier": _Knob(
            _real(1.0, None, open_low=False),
            4.0,
            "limit of a learning probe, times the usual one",
        ),
    }
)

_SECTIONS: Final = ("deadline", "idle", "hedge")  # sections with min..initial..max
_TOP: Final = ("default", "kinds", "peers")


def _tree() -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in KNOBS:
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = path
    return tree


_TREE: Final = _tree()


@dataclass(frozen=True)
class Value:
    """A knob's value and where it came from (``default``, a file, ...)."""

    value: object
    source: str


_DURATION_KNOBS: Final = frozenset(
    path
    for path in KNOBS
    if path.split(".")[-1] in {"initial", "min", "max", "probe_interval", "probe_max"}
)

Layer = Mapping[str, Value]


@dataclass(frozen=True)
class TimeoutConfig:
    """
    The validated, immutable timeout configuration.

    ``default`` holds every knob; ``kinds`` and ``peers`` hold only the
    knobs they override.  Use `rule` to resolve one (kind, peer).
    """

    default: Layer
    kinds: Mapping[str, Layer] = field(default_factory=lambda: MappingProxyType({}))
    peers: Mapping[str, Layer] = field(default_factory=lambda: MappingProxyType({}))

    def effective(self, kind: str | None = None, peer: str | None = None) -> dict[str, Value]:
        """Every knob for (kind, peer), with the source it came from."""
        merged = dict(self.default)
        if kind is not None:
            merged.update(self.kinds.get(kind, {}))
        if peer is not None:
            merged.update(self.peers.get(peer, {}))
        return merged

    def rule(self, kind: str | None = None, peer: str | None = None) -> Rule:
        """The flattened rule for calls of ``kind`` to ``peer``."""
        return _build_rule(self.effective(kind, peer))

    def explain(
        self, kind: str | None = None, peer: str | None = None
    ) -> list[tuple[str, str, str]]:
        """``(key, rendered value, source)`` rows for ``timeouts show``."""
        return [
            (path, render(path, value.value), value.source)
            for path, value in self.effective(kind, peer).items()
        ]


def render(path: str, value: object) -> str:
    """A knob's value as it would be written in a file."""
    if path in _DURATION_KNOBS and isinstance(value, float):
        return format_duration(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _build_rule(values: Mapping[str, Value]) -> Rule:
    def get(path: str) -> Any:
        return values[path].value

    def section(name: str) -> dict[str, Any]:
        knobs = {k: get(f"{name}.{k}") for k in _fields(name)}
        knobs["initial"] = min(max(knobs["initial"], knobs["min"]), knobs["max"])
        return knobs

    return Rule(
        policy=_as_policy(get("policy")),
        backoff=get("backoff"),
        deadline=DeadlineRule(**section("deadline")),
        idle=IdleRule(**section("idle")),
        hedge=HedgeRule(**section("hedge")),
        health=HealthRule(**{k: get(f"health.{k}") for k in _fields("health")}),
    )


def _as_policy(name: str) -> Policy:
    for policy in POLICIES:
        if policy == name:
            return policy
    raise AssertionError(name)  # pragma: no cover - validated earlier


def _fields(section: str) -> list[str]:
    return [p.split(".", 1)[1] for p in KNOBS if p.startswith(section + ".")]


def rule_label(config: TimeoutConfig, kind: str, peer: str | None = None) -> str:
    """
    A short label of the rule guarding ``kind`` calls (to ``peer``), for
    diagrams: ``idle p99\u00d73.5, 1s..30s``, ``deadline p99.9\u00d72, 250ms..30m``,
    ``fixed 10s`` or ``hedge p95 ≤5%, idle p99\u00d73.5, 1s..30s``.
    """
    return label(config.rule(kind, peer))
