"""
Read diagrams back into plain structure, so tests compare what a diagram
*says* with the machine rather than matching rendered text.
"""

from __future__ import annotations

import html
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import pydot

from fsmcancel.core._spec import MachineSpec

_DEFAULT_STATEMENTS = {"node", "edge", "graph"}


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


@dataclass
class Dot:
    nodes: dict[str, dict[str, str]]
    edges: list[tuple[str, str, dict[str, str]]]
    graph: dict[str, str]

    @property
    def graph_label(self) -> str:
        return self.graph["label"]

    def lines(self, node: str) -> list[str]:
        return label_lines(self.nodes[node]["label"])


def label_lines(label: str) -> list[str]:
    """
    The text lines of a DOT label, plain (``a\\nb``) or HTML-like
    (``<...<BR/>...>``), as Graphviz would show them.
    """
    if not label.startswith("<"):
        return label.replace("\\n", "\n").split("\n")
    text = re.sub(r"<BR[^>]*/>|</TR>", "\n", label[1:-1])
    text = html.unescape(re.sub(r"<[^>]*>", "", text))
    return [line.strip("\u00a0 ") for line in text.split("\n") if line.strip("\u00a0 ")]


def parse_dot(text: str) -> Dot:
    with warnings.catch_warnings():
        # pydot's pyparsing grammar warns about its own deprecated calls.
        warnings.simplefilter("ignore")
        graphs: Any = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1, "not exactly one DOT graph"
    graph = graphs[0]
    nodes = {
        _unquote(node.get_name()): {k: _unquote(str(v)) for k, v in node.get_attributes().items()}
        for node in graph.get_nodes()
        if node.get_name() not in _DEFAULT_STATEMENTS
    }
    graph_attrs: dict[str, str] = {}
    for node in graph.get_nodes():
        if node.get_name() == "graph":
            graph_attrs.update({k: _unquote(str(v)) for k, v in node.get_attributes().items()})
    edges = [
        (
            _unquote(edge.get_source()),
            _unquote(edge.get_destination()),
            {k: _unquote(str(v)) for k, v in edge.get_attributes().items()},
        )
        for edge in graph.get_edges()
    ]
    return Dot(nodes, edges, graph_attrs)


_ENTITY = re.compile(r"#(\w+);")
_PLACEHOLDER = re.compile("\x00(\\w+)\x01")
_NAMED = {"quot": '"', "lt": "<", "gt": ">"}


def _hide_entities(line: str) -> str:
    # As Mermaid does before parsing: the ";" of an entity ends nothing.
    return _ENTITY.sub(lambda m: f"\x00{m[1]}\x01", line)


def _decode(text: str) -> str:
    return _PLACEHOLDER.sub(lambda m: _NAMED.get(m[1]) or chr(int(m[1])), text)


@dataclass
class Mermaid:
    title: str
    names: dict[str, str] = field(default_factory=dict)  # id -> state name
    notes: dict[str, list[str]] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # names; "[*]" kept
    classes: dict[str, set[str]] = field(default_factory=dict)  # state name -> classes


def parse_mermaid(text: str) -> Mermaid:
    """
    Parse the subset of ``stateDiagram-v2`` fsmcancel writes, failing on
    any line outside it.
    """
    lines = text.splitlines()
    assert lines[:1] == ["---"] and lines[2:4] == ["---", "stateDiagram-v2"], lines[:4]
    assert lines[1].startswith("title: ")
    result = Mermaid(json.loads(lines[1].removeprefix("title: ")))
    pending_classes: list[tuple[str, str]] = []
    for raw in lines[4:]:
        line = _hide_entities(raw.strip())
        if not line or line.startswith("%%") or line.startswith(("direction ", "classDef ")):
            continue
        if m := re.fullmatch(r'state "([^"]*)" as (\w+)', line):
            result.names[m[2]] = _decode(m[1])
        elif m := re.fullmatch(r"(\w+) : ([^:;]+)", line):
            result.notes.setdefault(m[1], []).append(_decode(m[2]))
        elif m := re.fullmatch(r"(\w+|\[\*\]) --> (\w+|\[\*\])(?: : ([^:;]+))?", line):
            result.edges.append((m[1], m[2], _decode(m[3] or "")))
        elif m := re.fullmatch(r"class (\w+) (\w+)", line):
            pending_classes.append((m[1], m[2]))
        else:
            raise AssertionError(f"unexpected Mermaid line: {raw!r}")

    def name(node_id: str) -> str:
        return node_id if node_id == "[*]" else result.names[node_id]

    result.edges = [(name(a), name(b), label) for a, b, label in result.edges]
    result.notes = {name(k): v for k, v in result.notes.items()}
    for node_id, cls in pending_classes:
        result.classes.setdefault(name(node_id), set()).add(cls)
    return result


def expected_edges(spec: MachineSpec) -> list[tuple[str, str]]:
    """
    The (source, target) pairs a diagram draws as arrows: every transition
    but the loops, which are listed inside their state.
    """
    return [(t.source, t.target) for t in spec.transitions if t.source != t.target]
