"""
What `Timeouts.dumps` writes and `Timeouts.loads` reads: everything learned,
so that a restarted process (or ``fsmcancel timeouts show --state``) does
not start cold.

A state file is read by people and by processes other than the one that
wrote it, so loading is strict: every entry is parsed before anything is
installed, and the first problem is reported with the path to it
(``keys[3].first.events: bin 'x' is not an integer``).  Version 1 files
(raw samples, written before pooling and health existed) are converted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fsmcancel.timeouts._estimators import KeyEstimator, Pool
from fsmcancel.timeouts._health import PeerHealth
from fsmcancel.timeouts._histogram import Histogram

if TYPE_CHECKING:
    from fsmcancel.timeouts._config import TimeoutConfig
    from fsmcancel.timeouts._rule import Rule

VERSION = 2


def export_state(
    pools: Mapping[str, Pool],
    keys: Mapping[tuple[str, str], tuple[Rule, KeyEstimator]],
    peers: Mapping[str, PeerHealth],
) -> dict[str, Any]:
    return {
        "version": VERSION,
        "kinds": {kind: pool.export() for kind, pool in pools.items()},
        "keys": [
            {"kind": kind, "peer": peer, **est.export()} for (kind, peer), (_, est) in keys.items()
        ],
        "peers": {peer: health.export() for peer, health in peers.items()},
    }


def dumps(state: Mapping[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"))


def loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from None


Imported = tuple[
    dict[str, Pool], dict[tuple[str, str], tuple["Rule", KeyEstimator]], dict[str, PeerHealth]
]


def import_state(state: object, config: TimeoutConfig, now: float) -> Imported:
    if not isinstance(state, Mapping):
        raise ValueError(f"not fsmcancel timeout state: expected an object, got {_short(state)}")
    version = state.get("version")
    if version == 1:
        state = _from_version_1(state)
    elif version != VERSION:
        raise ValueError(
            f"not fsmcancel timeout state version {VERSION} (or 1): version is {version!r}"
        )
    unknown = sorted(set(state) - {"version", "kinds", "keys", "peers"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (expected version, kinds, keys, peers)")
    kinds, keys, peers = state.get("kinds", {}), state.get("keys", []), state.get("peers", {})
    if not isinstance(kinds, Mapping):
        raise ValueError(f"kinds: expected an object of kinds, got {_short(kinds)}")
    if not isinstance(keys, list):
        raise ValueError(f"keys: expected a list, got {_short(keys)}")
    if not isinstance(peers, Mapping):
        raise ValueError(f"peers: expected an object of peers, got {_short(peers)}")
    pools = {
        str(kind): Pool.load(config.rule(str(kind), None), data, f"kinds[{kind!r}]")
        for kind, data in kinds.items()
    }
    loaded: dict[tuple[str, str], tuple[Rule, KeyEstimator]] = {}
    for i, entry in enumerate(keys):
        where = f"keys[{i}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected an object, got {_short(entry)}")
        kind, peer = entry.get("kind"), entry.get("peer")
        for name, value in (("kind", kind), ("peer", peer)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{where}.{name}: expected a name, got {_short(value)}")
        assert isinstance(kind, str) and isinstance(peer, str)
        rule = config.rule(kind, peer)
        pool = pools.get(kind) or pools.setdefault(kind, Pool(config.rule(kind, None)))
        loaded[(kind, peer)] = (rule, KeyEstimator.load(rule, pool, dict(entry), where))
    healths = {
        str(peer): PeerHealth.load(data, f"peers[{peer!r}]", now, config.rule(None, str(peer)))
        for peer, data in peers.items()
    }
    return pools, loaded, healths


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _from_version_1(state: Mapping[str, Any]) -> dict[str, Any]:
    """
    Version 1 kept raw samples per key and no pools: replay the samples into
    histograms, and each kind's pool into the sum of its keys'.
    """
    keys = state.get("keys", [])
    if not isinstance(keys, list):
        raise ValueError(f"keys: expected a list, got {_short(keys)}")
    converted = []
    pools: dict[str, dict[str, Histogram]] = {}
    for i, entry in enumerate(keys):
        if not isinstance(entry, Mapping):
            raise ValueError(f"keys[{i}]: expected an object, got {_short(entry)}")
        new: dict[str, Any] = {"kind": entry.get("kind"), "peer": entry.get("peer")}
        pool = pools.setdefault(str(entry.get("kind")), {})
        for name in ("latency", "first", "gaps"):
            h = Histogram(1 << 30)
            pooled = pool.setdefault(name, Histogram(1 << 30))
            rows = entry.get(name, [])
            if not isinstance(rows, list):
                raise ValueError(f"keys[{i}].{name}: expected a list, got {_short(rows)}")
            for row in rows:
                value, censored = (row, False) if name == "gaps" else _row(row, i, name)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"keys[{i}].{name}: {_short(row)} is not a duration")
                if not math.isfinite(value) or value < 0:
                    raise ValueError(f"keys[{i}].{name}: bad duration {_short(row)}")
                (h.censor if censored else h.add)(float(value))
                (pooled.censor if censored else pooled.add)(float(value))
            new[name] = h.export()
        converted.append(new)
    kinds = {kind: {name: h.export() for name, h in p.items()} for kind, p in pools.items()}
    return {"version": VERSION, "kinds": kinds, "keys": converted}


def _row(row: object, i: int, name: str) -> tuple[Any, bool]:
    if not isinstance(row, list) or len(row) != 2:
        raise ValueError(f"keys[{i}].{name}: expected [seconds, censored], got {_short(row)}")
    return row[0], bool(row[1])
