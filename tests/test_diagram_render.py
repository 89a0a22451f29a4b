"""
Rendering one machine: DOT and Mermaid say exactly what the spec says --
states, arrows, loops inside their states, guards, child machines, the
legend -- and SVG and PNG come out of the real Graphviz.
"""

from __future__ import annotations

import shutil
import struct
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from fsmcancel.core._spec import MachineSpec, StateSpec, TransitionSpec
from fsmcancel.diagram import DIRECTIONS, Direction, render, spec_of
from fsmcancel.diagram._model import edge_label
from tests.diagram_fixtures import DOWNLOAD, FakeFactory, FakeOperation
from tests.diagram_fixtures_parsers import (
    expected_edges,
    label_lines,
    parse_dot,
    parse_mermaid,
)
from tests.diagram_fixtures_stress import AWKWARD, GUARDED, PARALLEL

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz `dot` is not installed (apt-get install graphviz); CI installs it",
)
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"


def label(kind: str) -> str:
    return f"{kind}: idle p99\u00d73.5, 1s..30s"


def arrows(spec: MachineSpec) -> dict[tuple[str, str], list[str]]:
    """
    Each DOT arrow between two states, by its ends: its label's lines.
    """
    found: dict[tuple[str, str], list[str]] = {}
    for a, b, attrs in parse_dot(render(spec, "dot", timeout_label=label)).edges:
        if "label" in attrs:
            found.setdefault((a, b), []).extend(label_lines(attrs["label"]))
    return found


def test_dot_has_every_state_and_an_arrow_per_transition() -> None:
    dot = parse_dot(render(DOWNLOAD, "dot", timeout_label=label))
    start = [name for name, attrs in dot.nodes.items() if attrs.get("shape") == "point"]
    assert len(start) == 1
    assert set(dot.nodes) - set(start) == {state.name for state in DOWNLOAD.states}
    drawn = [(a, b) for a, b, _ in dot.edges if a not in start]
    assert Counter(drawn) == Counter(expected_edges(DOWNLOAD))
    assert [(a, b) for a, b, _ in dot.edges if a in start] == [(start[0], "connecting")]


def test_dot_marks_state_kinds_resources_and_loops() -> None:
    dot = parse_dot(render(DOWNLOAD, "dot", timeout_label=label))
    assert "bold" in dot.nodes["connecting"]["style"]
    assert dot.nodes["done"]["peripheries"] == "2"
    assert "dashed" in dot.nodes["closing"]["style"]
    assert "peripheries" not in dot.nodes["receiving"]
    assert dot.lines("connecting") == ["connecting", "owns: connection attempt, connect timer"]
    # Loops are listed inside their state; fsmcancel's automatic cancel too.
    assert dot.lines("receiving") == ["receiving", "owns: connection", "↻ data / buffer"]
    assert dot.lines("closing") == ["closing", "(cleanup)", "owns: connection", "↻ cancel (no-op)"]
    assert dot.lines("done") == ["done", "(terminal)", "↻ cancel (no-op)"]
    assert not any(a == b for a, b, _ in dot.edges)


def test_dot_styles_cancel_and_timeout_arrows() -> None:
    edges = {
        (a, b, attrs["label"]): attrs
        for a, b, attrs in parse_dot(render(DOWNLOAD, "dot", timeout_label=label)).edges
        if "label" in attrs
    }
    cancel = edges[("receiving", "closing", "cancel / abort_read")]
    assert cancel["style"] == "dashed" and cancel["color"] == cancel["fontcolor"]
    timeout = edges[
        ("receiving", "closing", "stalled / give_up\\ntimeout read: idle p99\u00d73.5, 1s..30s")
    ]
    assert "style" not in timeout and timeout["color"].startswith("#")
    assert timeout["color"] != cancel["color"]
    plain = edges[("receiving", "closing", "finished")]
    assert set(plain) == {"label"}


def test_parallel_transitions_share_one_arrow_per_kind() -> None:
    found = arrows(PARALLEL)
    forward = ("negotiating", "transferring_a_very_long_state_name_indeed")
    assert found[forward] == [
        f"offer_{n}_accepted / begin_transfer_with_parameters_{n}" for n in range(4)
    ]
    # Back: the timeout arrow is apart from the plain one, which lists two.
    back = [
        label_lines(attrs["label"])
        for a, b, attrs in parse_dot(render(PARALLEL, "dot", timeout_label=label)).edges
        if (b, a) == forward
    ]
    assert sorted(back) == [
        ["renegotiate_0", "timeout transfer: idle p99\u00d73.5, 1s..30s"],
        ["renegotiate_1", "renegotiate_2"],
    ]


@pytest.mark.parametrize(
    ("transition", "guarded", "expected"),
    [
        (TransitionSpec("a", "go", "b", "start"), False, "go / start"),
        (TransitionSpec("a", "go", "b", "go"), False, "go"),
        (TransitionSpec("a", "go", "b", None), False, "go"),
        (TransitionSpec("a", "go", "b", "go", guard="ready"), True, "go [ready]"),
        (TransitionSpec("a", "go", "b", "start", guard="ready"), True, "go [ready] / start"),
        (TransitionSpec("a", "go", "b", "wait"), True, "go [else] / wait"),
    ],
)
def test_edge_labels(transition: TransitionSpec, guarded: bool, expected: str) -> None:
    assert edge_label(transition, guarded) == expected


def test_guarded_transitions_are_drawn_with_their_guards() -> None:
    found = arrows(GUARDED)
    assert found[("querying", "fetching")] == ["answered [holder_known] / start_fetch"]
    assert found[("fetching", "querying")] == ["failed [else] / ask_again"]
    assert found[("verifying", "failed")] == ["checked [else] / mismatch", "cancel"]
    dot = parse_dot(render(GUARDED, "dot", timeout_label=label))
    assert dot.lines("querying")[2:] == [
        "↻ answered [more_to_ask] / note_answer",
        "↻ answered [else] / wait",
        "↻ stalled / ask_another",
        "timeout query: idle p99\u00d73.5, 1s..30s",
    ]
    mermaid = parse_mermaid(render(GUARDED, timeout_label=label))
    assert ("querying", "failed", "answered [nobody_left] / give_up") in mermaid.edges
    assert "↻ answered [else] / wait" in mermaid.notes["querying"]
    # Every guarded transition says its guard, in both formats.
    dot_text = render(GUARDED, "dot", timeout_label=label)
    for t in GUARDED.transitions:
        if t.guard:
            assert f"{t.input} [{t.guard}]" in dot_text
            assert any(f"{t.input} [{t.guard}]" in text for text in _mermaid_texts(GUARDED))


def _mermaid_texts(spec: MachineSpec) -> list[str]:
    mermaid = parse_mermaid(render(spec, timeout_label=label))
    return [text for *_, text in mermaid.edges] + [n for ns in mermaid.notes.values() for n in ns]


def test_child_machines_are_referenced_once_and_linked() -> None:
    dot = parse_dot(render(GUARDED, "dot", timeout_label=label))
    refs = {name: attrs for name, attrs in dot.nodes.items() if "(child machine)" in attrs["label"]}
    assert {label_lines(a["label"])[0] for a in refs.values()} == {"share-query", "share-fetch"}
    assert {a["href"] for a in refs.values()} == {"share-query.svg", "share-fetch.svg"}
    runs = Counter(
        (a, label_lines(dot.nodes[b]["label"])[0])
        for a, b, attrs in dot.edges
        if b in refs and attrs.get("style") == "dotted"
    )
    assert runs == Counter(
        (state.name, child) for state in GUARDED.states for child in state.children
    )
    mermaid = parse_mermaid(render(GUARDED, timeout_label=label))
    assert [n for n in mermaid.notes["fetching"] if n.startswith("runs")] == [
        "runs ▸ share-fetch",
        "runs ▸ share-query",
    ]


def test_a_child_reference_never_takes_a_states_place() -> None:
    spec = MachineSpec(
        "clash",
        "child: kid",
        (StateSpec("child: kid", "running", (), ("kid",)), StateSpec("end", "terminal")),
        (TransitionSpec("child: kid", "cancel", "end"),),
    )
    dot = parse_dot(render(spec, "dot"))
    assert label_lines(dot.nodes["child: kid"]["label"]) == ["child: kid"]
    [ref] = [n for n, attrs in dot.nodes.items() if attrs.get("href") == "kid.svg"]
    assert ref != "child: kid"


def _legend(spec: MachineSpec, highlight: str | None = None) -> list[str]:
    dot = render(spec, "dot", timeout_label=label, highlight=highlight)
    return label_lines(parse_dot(dot).graph_label)


def test_legend_shows_only_what_the_diagram_draws() -> None:
    legend = _legend(DOWNLOAD)
    assert legend[0] == "download"
    texts = " ".join(legend[1:])
    for entry in ("initial", "running", "cleanup", "terminal", "cancel", "timeout", "loop"):
        assert entry in texts
    for absent in ("[guard]", "child machine", "current"):
        assert absent not in texts
    guarded = " ".join(_legend(GUARDED))
    assert "input [guard]" in guarded and "child machine" in guarded and "runs" in guarded
    assert "current" in " ".join(_legend(DOWNLOAD, highlight="receiving"))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_direction_applies_to_both_formats(direction: Direction) -> None:
    dot = render(DOWNLOAD, "dot", direction=direction)
    assert f'rankdir="{direction}"' in dot
    mermaid = render(DOWNLOAD, "mermaid", direction=direction)
    assert f"    direction {direction}\n" in mermaid


def test_default_direction_is_top_to_bottom() -> None:
    assert 'rankdir="TB"' in render(DOWNLOAD, "dot")
    assert "    direction TB\n" in render(DOWNLOAD)


def test_mermaid_has_exactly_the_machines_states_and_edges() -> None:
    mermaid = parse_mermaid(render(DOWNLOAD, "mermaid", timeout_label=label))
    assert mermaid.title == "download"
    assert sorted(mermaid.names.values()) == sorted(s.name for s in DOWNLOAD.states)
    inner = [(a, b) for a, b, _ in mermaid.edges if "[*]" not in (a, b)]
    assert Counter(inner) == Counter(expected_edges(DOWNLOAD))
    assert ("[*]", "connecting", "") in mermaid.edges
    assert {a for a, b, _ in mermaid.edges if b == "[*]"} == {"done", "failed"}


def test_mermaid_marks_kinds_cancels_timeouts_loops_and_resources() -> None:
    mermaid = parse_mermaid(render(DOWNLOAD, "mermaid", timeout_label=label))
    assert mermaid.classes == {
        "closing": {"cleanup"},
        "done": {"terminal"},
        "failed": {"terminal"},
    }
    assert "owns: connection attempt, connect timer" in mermaid.notes["connecting"]
    assert "↻ data / buffer" in mermaid.notes["receiving"]
    for state in ("closing", "done", "failed"):
        assert "↻ cancel (no-op)" in mermaid.notes[state], state
    texts = {text for *_, text in mermaid.edges}
    assert "✕ cancel / abort_read" in texts
    assert "stalled / give_up timeout read: idle p99\u00d73.5, 1s..30s" in texts


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
    for spec in (DOWNLOAD, GUARDED, AWKWARD):
        for fmt in ("dot", "mermaid"):
            assert render(spec, fmt, timeout_label=label) == render(spec, fmt, timeout_label=label)


def test_awkward_names_survive_both_formats() -> None:
    dot = parse_dot(render(AWKWARD, "dot"))
    states = {s.name for s in AWKWARD.states}
    assert states <= set(dot.nodes)
    assert {n: dot.lines(n)[0] for n in states} == {n: n for n in states}
    assert Counter((a, b) for a, b, _ in dot.edges if a in states and b in states) == Counter(
        expected_edges(AWKWARD)
    )
    assert label_lines(parse_dot(render(AWKWARD, "dot")).graph_label)[0] == AWKWARD.name
    assert "↻ \\N [#35;] / %%" in dot.lines("default")
    mermaid = parse_mermaid(render(AWKWARD, "mermaid"))
    assert mermaid.title == AWKWARD.name
    assert sorted(mermaid.names.values()) == sorted(states)
    assert len(set(mermaid.names)) == len(AWKWARD.states)
    assert ('say "hi"', "default", "go / a:b;c#d") in mermaid.edges
    assert ("default", "back\\slash <b>", "\\N [a & b]") in mermaid.edges
    assert "owns: a;b, c:d" in mermaid.notes['say "hi"']
    assert "runs ▸ child <&> machine" in mermaid.notes['say "hi"']
    assert ("default", "restyle", "turn direction LR / 100%") in mermaid.edges


def test_bad_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="no state 'nowhere'"):
        render(DOWNLOAD, highlight="nowhere")
    with pytest.raises(ValueError, match="unknown diagram format"):
        render(DOWNLOAD, "gif")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="unknown diagram direction 'UP'"):
        render(DOWNLOAD, direction="UP")  # type: ignore[call-overload]
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
def test_svg_is_valid_names_every_state_and_links_child_diagrams() -> None:
    svg = render(GUARDED, "svg", timeout_label=label)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    texts = {"".join(el.itertext()) for el in root.iter(f"{SVG}text")}
    for state in GUARDED.states:
        assert state.name in texts
    assert "idle p99\u00d73.5, 1s..30s" in svg.replace("&gt;", ">")
    links = {a.get(f"{XLINK}href") for a in root.iter(f"{SVG}a")}
    assert {"share-query.svg", "share-fetch.svg"} <= links


@needs_dot
def test_png_comes_from_graphviz() -> None:
    png = render(DOWNLOAD, "png", timeout_label=label)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    # Top to bottom by default: not a wide strip.
    assert 0.4 < width / height < 2.5
    wide = render(DOWNLOAD, "png", timeout_label=label, direction="LR")
    assert struct.unpack(">II", wide[16:24])[0] > width
