"""
Rendering one machine: DOT and Mermaid say exactly what the spec says, and
SVG comes out of the real Graphviz.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from fsmcancel._spec import MachineSpec, StateSpec, TransitionSpec
from fsmcancel.diagram import render, spec_of
from tests.diagram_fixtures import DOWNLOAD, FakeFactory, FakeOperation
from tests.diagram_fixtures_parsers import expected_edges, parse_dot, parse_mermaid

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz `dot` is not installed (apt-get install graphviz); CI installs it",
)


def label(kind: str) -> str:
    return f"{kind}: idle p99\u00d73.5, 1s..30s"


def test_dot_has_exactly_the_machines_states_and_edges() -> None:
    dot = parse_dot(render(DOWNLOAD, "dot", timeout_label=label))
    start = [name for name, attrs in dot.nodes.items() if attrs.get("shape") == "point"]
    assert len(start) == 1
    assert set(dot.nodes) - set(start) == {state.name for state in DOWNLOAD.states}
    drawn = [(a, b) for a, b, _ in dot.edges if a not in start]
    assert Counter(drawn) == Counter(expected_edges(DOWNLOAD, compact=False))
    assert [(a, b) for a, b, _ in dot.edges if a in start] == [(start[0], "connecting")]


def test_dot_marks_state_kinds_and_resources() -> None:
    nodes = parse_dot(render(DOWNLOAD, "dot", timeout_label=label)).nodes
    assert "bold" in nodes["connecting"]["style"]
    assert nodes["done"]["peripheries"] == "2"
    assert nodes["failed"]["peripheries"] == "2"
    assert "dashed" in nodes["closing"]["style"]
    assert "(cleanup)" in nodes["closing"]["label"]
    assert nodes["connecting"]["label"] == ("connecting\\nowns: connection attempt, connect timer")
    assert "peripheries" not in nodes["receiving"]


def test_dot_labels_and_styles_edges() -> None:
    edges = {
        (a, b, attrs["label"]): attrs
        for a, b, attrs in parse_dot(render(DOWNLOAD, "dot", timeout_label=label)).edges
        if "label" in attrs
    }
    for transition in DOWNLOAD.transitions:
        if transition.automatic:
            text = "cancel (auto)"
        elif transition.output is None:
            text = transition.input
        else:
            text = f"{transition.input} / {transition.output}"
        if transition.timeout:
            text += f"\\ntimeout {transition.timeout}: idle p99\u00d73.5, 1s..30s"
        attrs = edges[(transition.source, transition.target, text)]
        if transition.is_cancel:
            assert attrs["style"] in ("dashed", "dotted")
            assert attrs["color"].startswith("#")
        else:
            assert "style" not in attrs


def test_mermaid_has_exactly_the_machines_states_and_edges() -> None:
    mermaid = parse_mermaid(render(DOWNLOAD, "mermaid", timeout_label=label))
    assert mermaid.title == "download"
    assert sorted(mermaid.names.values()) == sorted(s.name for s in DOWNLOAD.states)
    inner = [(a, b) for a, b, _ in mermaid.edges if "[*]" not in (a, b)]
    assert Counter(inner) == Counter(expected_edges(DOWNLOAD, compact=True))
    assert ("[*]", "connecting", "") in mermaid.edges
    assert {a for a, b, _ in mermaid.edges if b == "[*]"} == {"done", "failed"}


def test_mermaid_marks_kinds_cancels_timeouts_and_resources() -> None:
    mermaid = parse_mermaid(render(DOWNLOAD, "mermaid", timeout_label=label))
    assert mermaid.classes == {
        "closing": {"cleanup"},
        "done": {"terminal"},
        "failed": {"terminal"},
    }
    assert "owns: connection attempt, connect timer" in mermaid.notes["connecting"]
    for state in ("closing", "done", "failed"):
        assert any("cancel" in note for note in mermaid.notes[state]), state
    assert "✕ cancel / abort_read" in {text for *_, text in mermaid.edges}
    assert "stalled / give_up timeout read: idle p99\u00d73.5, 1s..30s" in {
        text for *_, text in mermaid.edges
    }


def test_live_operation_highlights_its_state() -> None:
    op = FakeOperation(DOWNLOAD, "receiving")
    assert parse_mermaid(render(op, timeout_label=label)).classes["receiving"] == {"current"}
    assert parse_dot(render(op, "dot", timeout_label=label)).nodes["receiving"]["penwidth"] == "3"
    explicit = parse_mermaid(render(op, highlight="closing", timeout_label=label))
    assert explicit.classes["closing"] == {"cleanup", "current"}
    assert "current" not in explicit.classes.get("receiving", set())


def test_factory_is_not_highlighted() -> None:
    rendered = render(FakeFactory(DOWNLOAD), timeout_label=label)
    assert all("current" not in c for c in parse_mermaid(rendered).classes.values())
    assert spec_of(FakeFactory(DOWNLOAD)) is DOWNLOAD


def test_output_is_deterministic() -> None:
    for fmt in ("dot", "mermaid"):
        assert render(DOWNLOAD, fmt, timeout_label=label) == render(
            DOWNLOAD, fmt, timeout_label=label
        )


AWKWARD = MachineSpec(
    name='we"ird: name; #1',
    initial='say "hi"',
    states=(
        StateSpec('say "hi"', "running", ("a;b", "c:d")),
        StateSpec("default", "running"),
        StateSpec("x-y", "cleanup"),
        StateSpec("x y", "terminal"),
        StateSpec("back\\slash <b>", "terminal"),
        StateSpec("restyle", "running", ("x",)),
    ),
    transitions=(
        TransitionSpec('say "hi"', "go", "default", "a:b;c#d"),
        TransitionSpec('say "hi"', "cancel", "x y"),
        TransitionSpec("default", "cancel", "x-y", "<stop>"),
        TransitionSpec("default", "\\N", "back\\slash <b>"),
        TransitionSpec("x-y", "closed", "x y"),
        TransitionSpec("default", "turn direction LR", "restyle", "100%"),
        TransitionSpec("restyle", "cancel", "x y"),
    ),
)


def test_awkward_names_survive_both_formats() -> None:
    dot = parse_dot(render(AWKWARD, "dot"))
    assert {s.name for s in AWKWARD.states} <= set(dot.nodes)
    assert Counter((a, b) for a, b, _ in dot.edges if a in dot.nodes and a != "__start__") == (
        Counter(expected_edges(AWKWARD, compact=False))
    )
    mermaid = parse_mermaid(render(AWKWARD, "mermaid"))
    assert mermaid.title == AWKWARD.name
    assert sorted(mermaid.names.values()) == sorted(s.name for s in AWKWARD.states)
    assert len(set(mermaid.names)) == len(AWKWARD.states)
    assert ('say "hi"', "default", "go / a:b;c#d") in mermaid.edges
    assert "owns: a;b, c:d" in mermaid.notes['say "hi"']
    assert ("default", "restyle", "turn direction LR / 100%") in mermaid.edges


def test_bad_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="no state 'nowhere'"):
        render(DOWNLOAD, highlight="nowhere")
    with pytest.raises(ValueError, match="unknown diagram format"):
        render(DOWNLOAD, "png")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a MachineSpec"):
        render(object())
    broken = MachineSpec(
        "broken", "a", (StateSpec("a", "running"),), (TransitionSpec("a", "go", "b"),)
    )
    with pytest.raises(ValueError, match="undeclared state 'b'"):
        render(broken)


def test_timeout_label_defaults_without_configuration() -> None:
    # Whatever the configuration says, the kind is always named.
    text = render(DOWNLOAD, "mermaid")
    assert "stalled / give_up timeout read" in text


@needs_dot
def test_svg_is_valid_and_names_every_state() -> None:
    svg = render(DOWNLOAD, "svg", timeout_label=label)
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {"".join(el.itertext()) for el in root.iter("{http://www.w3.org/2000/svg}text")}
    for state in DOWNLOAD.states:
        assert state.name in texts
    assert "idle p99\u00d73.5, 1s..30s" in svg.replace("&gt;", ">")
