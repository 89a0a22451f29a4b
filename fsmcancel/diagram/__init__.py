"""
State diagrams generated from the code, so they cannot drift from it.

:func:`render` draws one machine -- a :class:`MachineSpec`, anything with a
``.spec`` (an fsmcancel machine factory or a live operation), or a plain
Automat ``TypeMachine`` / ``MethodicalMachine`` -- as DOT, Mermaid or SVG.
Diagrams mark the initial, cleanup and terminal states, label every
transition with its input and output, draw cancellations distinctly, list
the resources each state owns and label timeout transitions with their rule.

The ``fsmcancel diagram`` command (:mod:`fsmcancel.diagram._cli`) uses
:func:`find_machines`, :func:`diagram_files`, :func:`write_diagrams` and
:func:`stale_diagrams` to keep a directory of committed diagrams current.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from fsmcancel._spec import MachineSpec
from fsmcancel.diagram._discover import FoundMachine, TargetError, find_machines, spec_attribute
from fsmcancel.diagram._dot import dot_text
from fsmcancel.diagram._files import compare, file_stems, write_if_changed
from fsmcancel.diagram._from_automat import is_automat_machine, spec_from_automat
from fsmcancel.diagram._graphviz import GraphvizNotFound, find_dot, svg_from_dot
from fsmcancel.diagram._mermaid import mermaid_text
from fsmcancel.diagram._model import TimeoutLabel, build_view
from fsmcancel.diagram._timeout_labels import LazyLabel

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "DiagramFormat",
    "FoundMachine",
    "GraphvizNotFound",
    "TargetError",
    "diagram_files",
    "find_dot",
    "find_machines",
    "render",
    "spec_of",
    "stale_diagrams",
    "write_diagrams",
]

DiagramFormat = Literal["dot", "mermaid", "svg"]
FORMATS: tuple[DiagramFormat, ...] = ("dot", "mermaid", "svg")
SUFFIXES: Mapping[DiagramFormat, str] = {"dot": ".dot", "mermaid": ".mmd", "svg": ".svg"}


def spec_of(machine: object, name: str | None = None) -> MachineSpec:
    """
    The :class:`MachineSpec` of anything :func:`render` accepts.

    ``name`` only applies to plain Automat machines, which have none of
    their own; fsmcancel machines keep the name they were built with.
    """
    if isinstance(machine, MachineSpec):
        return machine
    spec = spec_attribute(machine)
    if spec is not None:
        return spec
    if is_automat_machine(machine):
        return spec_from_automat(machine, name)
    raise TypeError(
        "expected a MachineSpec, an fsmcancel machine or operation, or an Automat "
        f"TypeMachine/MethodicalMachine, not {type(machine).__qualname__}"
    )


def _current_state(machine: object) -> str | None:
    # A live operation has ``.spec`` and a string ``.state``; factories don't.
    if isinstance(machine, MachineSpec) or spec_attribute(machine) is None:
        return None
    state = getattr(machine, "state", None)
    return state if isinstance(state, str) else None


def render(
    machine: object,
    format: DiagramFormat = "mermaid",
    *,
    highlight: str | None = None,
    timeout_label: TimeoutLabel | None = None,
) -> str:
    """
    The text of a diagram of ``machine`` in ``format``.

    ``highlight`` names a state to mark as current; for a live operation it
    defaults to the operation's current state, which makes this usable
    from a debugging endpoint.  ``timeout_label(kind)`` describes the timeout
    rule for a call kind; by default it comes from the configuration file the
    machine declared (``OperationBuilder(timeouts=...)``), else the built-in
    defaults.  SVG needs Graphviz's ``dot`` (:class:`GraphvizNotFound`).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown diagram format {format!r}; expected one of {FORMATS}")
    spec = spec_of(machine)
    if highlight is None:
        highlight = _current_state(machine)
    label = _labels(spec) if timeout_label is None else timeout_label
    view = build_view(spec, highlight, label)
    if format == "mermaid":
        return mermaid_text(view)
    dot = dot_text(view)
    return dot if format == "dot" else svg_from_dot(dot)


def diagram_files(
    specs: Sequence[MachineSpec],
    out_dir: Path,
    formats: Iterable[DiagramFormat] = FORMATS,
    *,
    timeout_label: TimeoutLabel | None = None,
) -> dict[Path, str]:
    """
    The path and text of every diagram file for ``specs``:
    ``<out_dir>/<machine-name>.dot|.mmd|.svg``, names made safe and unique.
    """
    chosen = [fmt for fmt in FORMATS if fmt in set(formats)]
    files: dict[Path, str] = {}
    for stem, spec in zip(file_stems([spec.name for spec in specs]), specs, strict=True):
        label = _labels(spec) if timeout_label is None else timeout_label
        for fmt in chosen:
            files[out_dir / f"{stem}{SUFFIXES[fmt]}"] = render(spec, fmt, timeout_label=label)
    return files


_LABELS: dict[str | None, LazyLabel] = {}


def _labels(spec: MachineSpec) -> TimeoutLabel:
    """
    Timeout labels from the configuration the machine declared it runs with
    (``OperationBuilder(timeouts=...)``), or the defaults; one loader per
    file, since many machines share one.
    """
    if spec.timeouts not in _LABELS:
        _LABELS[spec.timeouts] = LazyLabel(spec.timeouts)
    return _LABELS[spec.timeouts]


def write_diagrams(files: Mapping[Path, str]) -> list[Path]:
    """
    Write ``files``, creating directories; return the paths that changed.
    """
    return [path for path, text in files.items() if write_if_changed(path, text)]


def stale_diagrams(files: Mapping[Path, str]) -> list[tuple[Path, str]]:
    """
    ``(path, "missing" | "differs")`` for every file on disk that does not
    match ``files``.  Writes nothing.
    """
    problems = [(path, compare(path, text)) for path, text in files.items()]
    return [(path, problem) for path, problem in problems if problem is not None]
