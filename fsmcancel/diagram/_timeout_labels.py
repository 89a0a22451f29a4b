"""
Timeout labels, from the timeout configuration when it is available.

``fsmcancel.timeouts`` is imported lazily and by name: diagrams must render
(with bare call kinds) before that module exists, and importing it only when
a machine actually has timeout transitions keeps ``fsmcancel diagram`` from
reading configuration it does not need.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from fsmcancel.diagram._model import TimeoutLabel


def bare_label(kind: str) -> str:
    """
    The label used when no timeout configuration is available: the kind.
    """
    return kind


def _timeouts_module() -> ModuleType | None:
    try:
        module = importlib.import_module("fsmcancel.timeouts")
    except ModuleNotFoundError as e:
        if e.name not in ("fsmcancel.timeouts", "fsmcancel"):
            raise  # fsmcancel.timeouts exists but is broken: say so.
        return None
    # Until the package exports them (a bare namespace package), fall back.
    if hasattr(module, "load_config") and hasattr(module, "rule_label"):
        return module
    return None


def configured_label(path: str | Path | None = None) -> TimeoutLabel:
    """
    A labeller showing each kind's rule and bounds, e.g.
    ``read: idle φ>8, 1s..30s``, from the configuration at ``path`` (or the
    defaults).

    The environment is deliberately ignored (``env={}``): committed diagrams
    must come out the same on every machine that checks them.
    """
    timeouts = _timeouts_module()
    if timeouts is None:
        if path is not None:
            raise RuntimeError("--timeouts needs fsmcancel.timeouts, which is not installed")
        return bare_label
    config = timeouts.load_config(path, env={})

    def label(kind: str) -> str:
        return f"{kind}: {timeouts.rule_label(config, kind)}"

    return label


class LazyLabel:
    """
    Defers :func:`configured_label` until a timeout edge needs a label, then
    keeps the result for every other edge and machine.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self._path = path
        self._label: TimeoutLabel | None = None

    def __call__(self, kind: str) -> str:
        if self._label is None:
            self._label = configured_label(self._path)
        return self._label(kind)
