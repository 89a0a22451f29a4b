"""
From a machine to the text (or PNG bytes) of its diagram, in one straight
line: spec (``_machines``) -> view (``_model``) -> format (``_dot``,
``_mermaid``, then ``_graphviz`` for SVG and PNG).

Owns: the formats, their file suffixes, and the defaults a diagram is drawn
with (timeout labels from the machine's own configuration, the live
operation's state highlighted).  Must not touch: files on disk (``_files``)
or the command line (``_cli``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, overload

from fsmcancel.core._spec import MachineSpec
from fsmcancel.diagram._dot import dot_text
from fsmcancel.diagram._files import Content, file_stems
from fsmcancel.diagram._graphviz import run_dot
from fsmcancel.diagram._machines import current_state, spec_of
from fsmcancel.diagram._mermaid import mermaid_text
from fsmcancel.diagram._model import (
    DEFAULT_DIRECTION,
    DiagramView,
    Direction,
    TimeoutLabel,
    build_view,
)
from fsmcancel.diagram._timeout_labels import declared_label

TextFormat = Literal["dot", "mermaid", "svg"]
DiagramFormat = Literal["dot", "mermaid", "svg", "png"]
FORMATS: tuple[DiagramFormat, ...] = ("dot", "mermaid", "svg", "png")
SUFFIXES: Mapping[DiagramFormat, str] = {
    "dot": ".dot",
    "mermaid": ".mmd",
    "svg": ".svg",
    "png": ".png",
}
#: What ``fsmcancel diagram`` writes unless told otherwise: PNG is for
#: pasting into documents that cannot show SVG, not for committing beside it.
DEFAULT_FORMATS: tuple[DiagramFormat, ...] = ("dot", "mermaid", "svg")
#: Formats Graphviz draws: their bytes depend on its version and fonts.
GRAPHVIZ_FORMATS: tuple[DiagramFormat, ...] = ("svg", "png")


def _formatted(view: DiagramView, format: DiagramFormat) -> Content:
    if format == "mermaid":
        return mermaid_text(view)
    dot = dot_text(view)
    if format == "dot":
        return dot
    drawn = run_dot(dot, format)
    return drawn if format == "png" else drawn.decode("utf-8")


@overload
def render(
    machine: object,
    format: TextFormat = "mermaid",
    *,
    highlight: str | None = None,
    timeout_label: TimeoutLabel | None = None,
    direction: Direction = DEFAULT_DIRECTION,
) -> str: ...
@overload
def render(
    machine: object,
    format: Literal["png"],
    *,
    highlight: str | None = None,
    timeout_label: TimeoutLabel | None = None,
    direction: Direction = DEFAULT_DIRECTION,
) -> bytes: ...
def render(
    machine: object,
    format: DiagramFormat = "mermaid",
    *,
    highlight: str | None = None,
    timeout_label: TimeoutLabel | None = None,
    direction: Direction = DEFAULT_DIRECTION,
) -> str | bytes:
    """
    The diagram of ``machine`` in ``format``: text, or bytes for ``"png"``.

    ``highlight`` names a state to mark as current; for a live operation it
    defaults to the operation's current state, which makes this usable
    from a debugging endpoint.  ``timeout_label(kind)`` describes the timeout
    rule for a call kind; by default it comes from the configuration file the
    machine declared (``OperationBuilder(timeouts=...)``), else the built-in
    defaults.  ``direction`` is ``"TB"`` (top to bottom), ``"BT"``, ``"LR"``
    or ``"RL"``.  SVG and PNG need Graphviz's ``dot``
    (:class:`GraphvizNotFound`).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown diagram format {format!r}; expected one of {FORMATS}")
    spec = spec_of(machine)
    if highlight is None:
        highlight = current_state(machine)
    label = declared_label(spec) if timeout_label is None else timeout_label
    return _formatted(build_view(spec, highlight, label, direction), format)


def diagram_files(
    specs: Sequence[MachineSpec],
    out_dir: Path,
    formats: Iterable[DiagramFormat] = DEFAULT_FORMATS,
    *,
    timeout_label: TimeoutLabel | None = None,
    direction: Direction = DEFAULT_DIRECTION,
) -> dict[Path, Content]:
    """
    The path and content of every diagram file for ``specs``:
    ``<out_dir>/<machine-name>.dot|.mmd|.svg|.png``, names made safe and
    unique.
    """
    wanted = set(formats)
    unknown = wanted - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown diagram format(s) {sorted(unknown)}; expected {FORMATS}")
    chosen = [fmt for fmt in FORMATS if fmt in wanted]
    files: dict[Path, Content] = {}
    for stem, spec in zip(file_stems([spec.name for spec in specs]), specs, strict=True):
        label = declared_label(spec) if timeout_label is None else timeout_label
        view = build_view(spec, None, label, direction)
        for fmt in chosen:
            files[out_dir / f"{stem}{SUFFIXES[fmt]}"] = _formatted(view, fmt)
    return files
