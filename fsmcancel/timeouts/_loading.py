"""
Loading the timeout configuration from TOML, a dict and the environment,
validating all of it before anything is built.

Every problem is collected (not just the first), each naming its key path or
environment variable and the bad value, and nothing is applied unless
everything is valid: a half-applied configuration would be a timeout nobody
chose.  ``fsmcancel timeouts check`` calls `load_config` exactly as a
program does, environment included, so the two never disagree.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from fsmcancel.timeouts._config import (
    _SECTIONS,
    _TOP,
    _TREE,
    ENV_PREFIX,
    KNOBS,
    ConfigError,
    Layer,
    Problem,
    TimeoutConfig,
    Value,
)
from fsmcancel.timeouts._duration import DurationError, format_duration

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]


class _Collector:
    """Parses raw layers, collecting every problem instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.default: dict[str, Value] = {}
        self.kinds: dict[str, dict[str, Value]] = {}
        self.peers: dict[str, dict[str, Value]] = {}

    def add_document(self, doc: object, source: str) -> None:
        if not isinstance(doc, Mapping):
            self.problems.append(Problem("<root>", f"expected a table, got {doc!r}"))
            return
        for key, sub in doc.items():
            if key == "default":
                self._add_rule(sub, "default", source, self.default)
            elif key in ("kinds", "peers"):
                target = self.kinds if key == "kinds" else self.peers
                if not isinstance(sub, Mapping):
                    self.problems.append(Problem(key, f"expected a table of names, got {sub!r}"))
                    continue
                for name, table in sub.items():
                    path = f"{key}.{quote_key(str(name))}"
                    self._add_rule(table, path, source, target.setdefault(str(name), {}))
            else:
                self.problems.append(Problem(str(key), _unknown(str(key), _TOP)))

    def _add_rule(self, table: object, path: str, source: str, into: dict[str, Value]) -> None:
        if not isinstance(table, Mapping):
            self.problems.append(Problem(path, f"expected a table, got {table!r}"))
            return
        self._walk(table, _TREE, path, source, into)

    def _walk(
        self,
        table: Mapping[Any, Any],
        schema: Mapping[str, Any],
        path: str,
        source: str,
        into: dict[str, Value],
    ) -> None:
        for key, raw in table.items():
            where = f"{path}.{key}"
            node = schema.get(str(key))
            if node is None:
                self.problems.append(Problem(where, _unknown(str(key), schema)))
            elif isinstance(node, dict):
                if isinstance(raw, Mapping):
                    self._walk(raw, node, where, source, into)
                else:
                    self.problems.append(Problem(where, f"expected a table, got {raw!r}"))
            else:
                self.set(node, raw, where, source, into)

    def set(self, knob: str, raw: object, where: str, source: str, into: dict[str, Value]) -> None:
        try:
            value = KNOBS[knob].parse(raw)
        except (ValueError, DurationError) as e:
            self.problems.append(Problem(where, str(e)))
        else:
            into[knob] = Value(value, source)

    def add_environment(self, env: Mapping[str, str]) -> None:
        for variable in sorted(env):
            if not variable.upper().startswith(ENV_PREFIX):
                continue
            parts = variable[len(ENV_PREFIX) :].lower().split("__")
            source = f"env {variable}"
            raw = env[variable]
            if parts[0] == "default":
                into, rest = self.default, parts[1:]
            elif parts[0] in ("kinds", "peers") and len(parts) >= 3:
                names = self.kinds if parts[0] == "kinds" else self.peers
                into, rest = names.setdefault(_match_name(parts[1], names), {}), parts[2:]
            else:
                candidates = [ENV_PREFIX + t.upper() + "__" for t in _TOP]
                self.problems.append(
                    Problem(
                        variable,
                        "expected FSMCANCEL_TIMEOUTS__DEFAULT__<KNOB>, "
                        "FSMCANCEL_TIMEOUTS__KINDS__<KIND>__<KNOB> or "
                        f"FSMCANCEL_TIMEOUTS__PEERS__<PEER>__<KNOB> (sections: {candidates})",
                    )
                )
                continue
            knob = ".".join(rest)
            if knob not in KNOBS:
                hint = difflib.get_close_matches(knob, list(KNOBS), n=1)
                suggestion = ""
                if hint:
                    fixed = "__".join(hint[0].split(".")).upper()
                    prefix = variable[: len(variable) - len("__".join(rest))]
                    suggestion = f"; did you mean {prefix}{fixed}?"
                self.problems.append(Problem(variable, f"unknown knob {knob!r}{suggestion}"))
                continue
            self.set(knob, raw, variable, source, into)


def quote_key(name: str) -> str:
    """A table name as TOML would need it written."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'


def _unknown(key: str, valid: Mapping[str, Any] | tuple[str, ...]) -> str:
    names = list(valid)
    hint = difflib.get_close_matches(key, names, n=1)
    if hint:
        return f"unknown key {key!r}; did you mean {hint[0]!r}?"
    return f"unknown key {key!r} (valid: {', '.join(names)})"


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "_", name.lower())


def _match_name(env_name: str, known: Mapping[str, object]) -> str:
    """
    Environment variable names are case-insensitive and cannot hold ``-``
    or ``.``, so a kind or peer named in the file is matched ignoring case
    and treating every other character as ``_``; otherwise the lowercase
    name is used.
    """
    for name in known:
        if _normal(name) == env_name:
            return name
    return env_name


def _check_combinations(c: _Collector, defaults: Layer) -> None:
    """
    Bounds can be split across layers (``min`` from a file, ``max`` from the
    environment), so they are checked on every combination a call could
    resolve to, and the message names the layer that broke them.
    """
    base = {**defaults, **c.default}
    combos: list[tuple[str, dict[str, Value]]] = [("default", base)]
    for kind, layer in c.kinds.items():
        combos.append((f"kinds.{quote_key(kind)}", {**base, **layer}))
    for peer, layer in c.peers.items():
        combos.append((f"peers.{quote_key(peer)}", {**base, **layer}))
        for kind, klayer in c.kinds.items():
            combos.append(
                (
                    f"peers.{quote_key(peer)} with kinds.{quote_key(kind)}",
                    {**base, **klayer, **layer},
                )
            )
    seen: set[str] = set()
    for where, values in combos:
        for section in _SECTIONS:
            lo, init, hi = (values[f"{section}.{k}"] for k in ("min", "initial", "max"))
            assert isinstance(lo.value, float) and isinstance(hi.value, float)
            assert isinstance(init.value, float)
            message = None
            if lo.value > hi.value:
                message = (
                    f"min {format_duration(lo.value)} ({lo.source}) > "
                    f"max {format_duration(hi.value)} ({hi.source})"
                )
            elif not lo.value <= init.value <= hi.value and init.source != "default":
                # A built-in initial is quietly clamped into the user's bounds
                # (see _build_rule); one the user wrote is a contradiction.
                message = (
                    f"initial {format_duration(init.value)} ({init.source}) is outside "
                    f"min..max {format_duration(lo.value)}..{format_duration(hi.value)}"
                )
            if message is not None and message not in seen:
                seen.add(message)
                c.problems.append(Problem(f"{where}.{section}", message))


def _defaults() -> dict[str, Value]:
    return {path: Value(knob.default, "default") for path, knob in KNOBS.items()}


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    data: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> TimeoutConfig:
    """
    Build the timeout configuration from defaults, a TOML file, a dict and
    environment variables, in that order of precedence (later wins).

    ``env`` defaults to ``os.environ``; pass ``{}`` to ignore the
    environment.  Everything is validated before anything is built: the
    result is complete and immutable, or `ConfigError` lists every problem.
    ``OSError`` propagates if ``path`` cannot be read.
    """
    c = _Collector()
    if path is not None:
        with open(path, "rb") as f:
            try:
                doc = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError([Problem(os.fspath(path), f"not valid TOML: {e}")]) from None
        c.add_document(doc, f"file {os.fspath(path)}")
    if data is not None:
        c.add_document(data, "dict")
    c.add_environment(os.environ if env is None else env)
    defaults = _defaults()
    _check_combinations(c, defaults)
    if c.problems:
        raise ConfigError(c.problems)
    return TimeoutConfig(
        default=MappingProxyType({**defaults, **c.default}),
        kinds=MappingProxyType({k: MappingProxyType(v) for k, v in c.kinds.items()}),
        peers=MappingProxyType({k: MappingProxyType(v) for k, v in c.peers.items()}),
    )


def iter_layers(config: TimeoutConfig) -> Iterator[tuple[str, str, Layer]]:
    """``("kinds" or "peers", name, layer)`` for every override."""
    for kind, layer in config.kinds.items():
        yield "kinds", kind, layer
    for peer, layer in config.peers.items():
        yield "peers", peer, layer
