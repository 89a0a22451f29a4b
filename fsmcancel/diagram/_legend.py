"""
The title and legend of a Graphviz diagram, as one HTML-like graph label.

Owns: which legend entries a diagram gets -- only what it draws, so a
machine without guards gets no guard entry -- and their markup.  Must not
touch: the drawing of states and edges (``_dot``); the legend copies their
look through ``_palette`` and the same Graphviz styles.

A graph label rather than a legend cluster: a cluster would be laid out with
the states and pull them around, while Graphviz keeps the graph label in a
band of its own above the drawing, where it cannot overlap anything.
Mermaid gets no legend: it cannot draw one outside the states, and its
output already spells every marking out in words.
"""

from __future__ import annotations

from itertools import zip_longest

from fsmcancel.diagram import _palette as palette
from fsmcancel.diagram._model import LOOP_MARK, DiagramView

SMALL = 9


def html(text: str) -> str:
    """
    ``text`` escaped for a Graphviz HTML-like label.
    """
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _text(text: str, color: str | None = None) -> str:
    colour = f' COLOR="{color}"' if color else ""
    return f'<FONT POINT-SIZE="{SMALL}"{colour}>{html(text)}</FONT>'


def _box(text: str, *, border: int = 1, fill: str | None = None) -> str:
    background = f' BGCOLOR="{fill}"' if fill else ""
    return f'<TD BORDER="{border}" STYLE="rounded"{background}>{_text(text)}</TD>'


def _terminal() -> str:
    # A table around a cell: the double border of ``peripheries=2``.
    inner = _box("terminal", fill=palette.TERMINAL_FILL)
    return (
        '<TD><TABLE BORDER="1" STYLE="rounded" CELLBORDER="0" CELLSPACING="2" '
        f'CELLPADDING="0"><TR>{inner}</TR></TABLE></TD>'
    )


def _edge_sample(stroke: str, color: str | None, text: str) -> str:
    # Strokes are drawn in text: Graphviz 2.43 crashes (xdot and json
    # output) on some dashed or dotted borders in HTML-like labels.
    arrow = stroke + "\N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}"
    return f'<TD ALIGN="LEFT">{_text(f"{arrow} {text}", color)}</TD>'


def _state_entries(view: DiagramView) -> list[str]:
    kinds = {node.kind for node in view.nodes}
    entries = [_box("initial", border=2), _box("running")]
    if "cleanup" in kinds:
        entries.append(_box("cleanup", fill=palette.CLEANUP_FILL))
    if "terminal" in kinds:
        entries.append(_terminal())
    if any(node.current for node in view.nodes):
        entries.append(_box("current", border=3, fill=palette.CURRENT_FILL))
    if view.children():
        color = palette.CHILD_COLOR
        entries.append(f'<TD BORDER="1" COLOR="{color}">{_text("child machine", color)}</TD>')
    return entries


def _edge_entries(view: DiagramView) -> list[str]:
    kinds = {edge.kind for edge in view.edges}
    kinds.update(loop.kind for node in view.nodes for loop in node.loops)
    entries = []
    if "cancel" in kinds:
        entries.append(_edge_sample("- - -", palette.CANCEL_COLOR, "cancel"))
    if "timeout" in kinds:
        entries.append(_edge_sample("\N{EM DASH}" * 2, palette.TIMEOUT_COLOR, "timeout"))
    if view.guards:
        entries.append(f'<TD ALIGN="LEFT">{_text("input [guard]")}</TD>')
    if view.children():
        entries.append(_edge_sample("\N{MIDDLE DOT}" * 4, palette.CHILD_COLOR, "runs"))
    if any(node.loops for node in view.nodes):
        entries.append(f'<TD ALIGN="LEFT">{_text(f"{LOOP_MARK} loop, inside its state")}</TD>')
    return entries


def graph_label(view: DiagramView) -> str:
    """
    The graph's HTML-like label (without its enclosing ``<>``): the
    machine's name over a two-column legend, the state markings the diagram
    uses on the left and its edge markings on the right.

    Columns rather than rows: Graphviz stretches every cell of a narrower
    row to the width of the widest, which would blow the state samples up
    to the width of the edge texts; in a column they only match each other.
    """
    pairs = zip_longest(_state_entries(view), _edge_entries(view), fillvalue="<TD></TD>")
    rows = "".join(f"<TR>{state}{edge}</TR>" for state, edge in pairs)
    legend = f'<TABLE BORDER="0" CELLSPACING="3" CELLPADDING="1">{rows}</TABLE>'
    title = f'<FONT POINT-SIZE="16"><B>{html(view.name)}</B></FONT>'
    return (
        '<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="2">'
        f"<TR><TD>{title}</TD></TR><TR><TD>{legend}</TD></TR></TABLE>"
    )
