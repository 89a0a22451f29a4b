"""
Fuzzing the timeout configuration: random TOML documents, built from the
schema's own vocabulary mixed with junk, and random text.  Loading either
returns a configuration that answers for every kind and peer it names, or
raises the documented ``ConfigError`` naming a key path; nothing else, and
never a half-applied configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsmcancel.timeouts import ConfigError, TimeoutConfig, load_config

KNOBS = {
    "deadline": ["initial", "min", "max", "quantile", "multiplier", "window"],
    "idle": ["initial", "min", "max", "quantile", "multiplier", "window"],
    "hedge": ["initial", "min", "max", "quantile", "budget", "burst"],
    "health": ["suspect_after", "probe_interval", "probe_max", "probe_multiplier"],
}
names = st.sampled_from(["get", "put", "v0-abc", "mirror.2", "x"]) | st.text(
    "abcxyz_-.", min_size=1, max_size=6
)
durations = st.sampled_from(["250ms", "5s", "2m", "1h", "0s", "5x", "-3s", "", "10", "1e3s"])
scalars = st.one_of(
    durations,
    st.integers(-5, 2000),
    st.floats(-1, 2000, allow_nan=False),
    st.booleans(),
    st.sampled_from(["fixed", "deadline", "idle", "hedge", "idel", "HEDGE"]),
)
knob_tables = st.fixed_dictionaries(
    {},
    optional={
        section: st.dictionaries(
            st.sampled_from([*knobs, "multipler", "bogus"]), scalars, max_size=4
        )
        for section, knobs in KNOBS.items()
    },
)
layers = st.builds(
    lambda table, extra: {**table, **extra},
    knob_tables,
    st.dictionaries(st.sampled_from(["policy", "backoff", "polcy"]), scalars, max_size=2),
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "default": layers,
        "kinds": st.dictionaries(names, layers, max_size=2),
        "peers": st.dictionaries(names, layers, max_size=2),
        "junk": scalars,
    },
)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def to_toml(doc: dict[str, Any], prefix: str = "") -> str:
    plain = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in plain.items()]
    for key, table in tables.items():
        name = f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key)
        lines.append(f"\n[{name}]")
        lines.append(to_toml(table, name))
    return "\n".join(lines)


def load_or_error(path: Path) -> TimeoutConfig | ConfigError:
    try:
        return load_config(path, env={})
    except ConfigError as e:
        return e


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=documents)
def test_random_documents(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "t.toml"
    path.write_text(to_toml(doc))
    result = load_or_error(path)
    if isinstance(result, ConfigError):
        assert result.problems, "a ConfigError names at least one problem"
        for problem in result.problems:
            assert problem.path and problem.message
        assert str(path) in str(result) or result.problems[0].path in str(result)
        return
    # Valid: it answers for every kind and peer it names, and is frozen.
    for kind in [None, *doc.get("kinds", {})]:
        for peer in [None, *doc.get("peers", {})]:
            rule = result.rule(kind, peer)
            assert rule.idle.min <= rule.idle.initial <= rule.idle.max
            assert rule.deadline.min <= rule.deadline.initial <= rule.deadline.max


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=200))
def test_random_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text, encoding="utf-8")
    result = load_or_error(path)
    assert isinstance(result, (TimeoutConfig, ConfigError))


@given(doc=documents, good=st.booleans())
@settings(max_examples=100, deadline=None)
def test_dict_source_is_all_or_nothing(doc: dict[str, Any], good: bool) -> None:
    # A bad layer on top of a good one must not leave the good one half
    # overridden: the call fails as a whole, and a fresh load is unaffected.
    base = load_config(data={"default": {"idle": {"max": "40s"}}}, env={})
    try:
        merged = load_config(data=doc, env={})
    except ConfigError:
        assert load_config(data={"default": {"idle": {"max": "40s"}}}, env={}) == base
        return
    assert isinstance(merged, TimeoutConfig)
