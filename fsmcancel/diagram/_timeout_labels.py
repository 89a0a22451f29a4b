"""
Timeout labels (``read: idle p99x3.5, 1s..30s``) from a timeout configuration.

Owns: turning a call kind into the text on a timeout edge, and remembering
one loaded configuration per file.  Must not touch: the configuration
format or its rules -- only ``fsmcancel.timeouts``'s public
``load_config`` and ``rule_label`` are used.

``fsmcancel.timeouts`` is imported, and the file read, only when a timeout
edge actually needs a label, so ``fsmcancel diagram`` on machines without
timeouts reads no configuration it does not need.
"""

from __future__ import annotations

from pathlib import Path

from fsmcancel.core._spec import MachineSpec
from fsmcancel.diagram._model import TimeoutLabel


def configured_label(path: str | Path | None = None) -> TimeoutLabel:
    """
    A labeller showing each kind's rule and bounds from the configuration
    at ``path`` (or the defaults).

    The environment is deliberately ignored (``env={}``): committed diagrams
    must come out the same on every machine that checks them.
    """
    from fsmcancel import timeouts

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


_LABELS: dict[str | None, LazyLabel] = {}


def declared_label(spec: MachineSpec) -> TimeoutLabel:
    """
    Timeout labels from the configuration the machine declared it runs with
    (``OperationBuilder(timeouts=...)``), or the defaults; one loader per
    file, since many machines share one.
    """
    if spec.timeouts not in _LABELS:
        _LABELS[spec.timeouts] = LazyLabel(spec.timeouts)
    return _LABELS[spec.timeouts]
