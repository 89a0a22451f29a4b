"""
Where Graphviz put every label, read from its own layout (``dot -Tjson``),
and the overlaps between them.

Each text line's box is as wide as Graphviz laid it out (the ``T``
drawing operation, with Graphviz's own font metrics) and as tall as the
glyphs of its font can be: from ``DESCENT`` below the baseline to
``ASCENT`` above it, in font sizes -- Helvetica's ascender is 0.72 and its
descender 0.21, and no ASCII glyph reaches further; the line spacing
around them is empty.  A node is its whole shape.  Two boxes overlap when
they share more than ``TOLERANCE`` points each way, which leaves room for
Graphviz's rounding to two decimals and nothing more.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from itertools import combinations
from typing import Any

TOLERANCE = 0.5
ASCENT = 0.8
DESCENT = 0.22


@dataclass(frozen=True)
class Box:
    what: str  # "node NAME", "edge A->B", "graph"
    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    ink: tuple[float, float] = (0.0, 0.0)  # baseline to cap height, for text

    def overlaps(self, other: Box) -> bool:
        dx = min(self.x1, other.x1) - max(self.x0, other.x0)
        dy = min(self.y1, other.y1) - max(self.y0, other.y0)
        return dx > TOLERANCE and dy > TOLERANCE

    def inks(self, x: float, y: float) -> bool:
        """
        Whether a line through ``(x, y)`` would strike the text itself: the
        band from baseline to cap height, not the empty corners of the line
        box, which Graphviz lets an edge graze beside its own label.
        """
        low, high = self.ink
        return self.x0 + 1 < x < self.x1 - 1 and low < y < high


@dataclass
class Layout:
    width: float
    height: float
    nodes: list[Box]  # whole node shapes
    labels: list[Box]  # one per line of text of edge labels
    node_texts: list[Box]
    graph_label: list[Box]
    curves: dict[str, list[tuple[float, float]]]  # points along each edge

    @property
    def ratio(self) -> float:
        return self.width / self.height


def layout(dot_source: str) -> Layout:
    """
    Lay ``dot_source`` out with Graphviz and read back every box.
    """
    result = subprocess.run(
        ["dot", "-Tjson"], input=dot_source.encode(), capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    graph = json.loads(result.stdout)
    x0, y0, x1, y1 = (float(v) for v in graph["bb"].split(","))
    names: dict[int, str] = {}
    nodes, node_texts = [], []
    for obj in graph.get("objects", []):
        if "nodes" in obj or "edges" in obj or "pos" not in obj:
            continue  # a subgraph
        names[obj["_gvid"]] = obj["name"]
        x, y = (float(v) for v in obj["pos"].split(","))
        w, h = float(obj["width"]) * 36, float(obj["height"]) * 36
        what = f"node {obj['name']}"
        nodes.append(Box(what, obj["name"], x - w, y - h, x + w, y + h))
        node_texts += _texts(what, obj.get("_ldraw_", []))
    labels: list[Box] = []
    curves: dict[str, list[tuple[float, float]]] = {}
    for n, edge in enumerate(graph.get("edges", [])):
        what = f"edge {names[edge['tail']]}->{names[edge['head']]} #{n}"
        labels += _texts(what, edge.get("_ldraw_", []))
        labels += _texts(what, edge.get("_hldraw_", []) + edge.get("_tldraw_", []))
        curves[what] = [p for op in edge.get("_draw_", []) if op["op"] == "b" for p in _bezier(op)]
    return Layout(
        x1 - x0,
        y1 - y0,
        nodes,
        labels,
        node_texts,
        _texts("graph", graph.get("_ldraw_", [])),
        curves,
    )


def _texts(what: str, ops: list[dict[str, Any]]) -> list[Box]:
    boxes, size = [], 14.0
    for op in ops:
        if op["op"] == "F":
            size = float(op["size"])
        elif op["op"] == "T":
            x, y = op["pt"]
            width = float(op["width"])
            left = {"l": x, "c": x - width / 2, "r": x - width}[op["align"]]
            ink = (y, y + 0.7 * size)
            top, bottom = y + ASCENT * size, y - DESCENT * size
            boxes.append(Box(what, op["text"], left, bottom, left + width, top, ink))
    return boxes


def _bezier(op: dict[str, Any], steps: int = 24) -> list[tuple[float, float]]:
    points = op["points"]
    out = []
    for i in range(0, len(points) - 3, 3):
        (ax, ay), (bx, by), (cx, cy), (dx, dy) = points[i : i + 4]
        for k in range(steps + 1):
            t = k / steps
            u = 1 - t
            out.append(
                (
                    u**3 * ax + 3 * u * u * t * bx + 3 * u * t * t * cx + t**3 * dx,
                    u**3 * ay + 3 * u * u * t * by + 3 * u * t * t * cy + t**3 * dy,
                )
            )
    return out


def overlaps(found: Layout) -> list[str]:
    """
    Every pair of things that overlap: two edge labels, an edge label and a
    node, two nodes, or anything and the title/legend.
    """
    problems = []
    labels = found.labels
    for a, b in combinations(labels, 2):
        if a.what != b.what and a.overlaps(b):
            problems.append(f"{a.what} {a.text!r} overlaps {b.what} {b.text!r}")
    for label in labels + found.graph_label:
        for node in found.nodes:
            if label.overlaps(node):
                problems.append(f"{label.what} {label.text!r} overlaps {node.what}")
    for a, b in combinations(found.nodes, 2):
        if a.overlaps(b):
            problems.append(f"{a.what} overlaps {b.what}")
    for legend in found.graph_label:
        for label in labels:
            if legend.overlaps(label):
                problems.append(f"graph label {legend.text!r} overlaps {label.what}")
    return problems


def crossings(found: Layout) -> list[str]:
    """
    Every edge that runs through a line of some edge's label (its own
    included: a self-loop drawn through its own label).
    """
    problems = []
    for what, points in found.curves.items():
        for label in found.labels:
            if any(label.inks(x, y) for x, y in points):
                problems.append(f"{what} runs through {label.what} {label.text!r}")
    return problems
