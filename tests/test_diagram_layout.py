"""
Diagrams worth looking at, measured on Graphviz's own layout (``dot -Tjson``):
no two labels overlap, no arrow runs through a label, and the drawings are
not strips.

Checked on the committed diagrams, on machines built to be hard to draw
(``tests/diagram_fixtures_stress.py``: many loops, parallel arrows, long
labels, guards, child machines, awkward names) in every direction, and on
random machines.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fsmcancel.core._spec import MachineSpec
from fsmcancel.diagram import DIRECTIONS, Direction, find_machines, render
from tests.diagram_fixtures_layout import crossings, layout, overlaps
from tests.diagram_fixtures_stress import FIXED, random_machine

pytestmark = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz `dot` is not installed (apt-get install graphviz); CI installs it",
)

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted((ROOT / "diagrams").glob("*.dot"))


def label(kind: str) -> str:
    # As long as real rules get: long labels are what collide.
    return f"{kind}: hedge p95 ≤5%, deadline p99.9x3, 250ms..30s"


def _fixtures() -> list[MachineSpec]:
    found = [f.spec for t in ("tests.diagram_fixtures", "examples") for f in find_machines(t)]
    return [*FIXED, *found]


def test_there_are_committed_diagrams() -> None:
    assert len(COMMITTED) >= 3


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_diagrams_have_no_overlaps_and_sensible_shape(path: Path) -> None:
    drawn = layout(path.read_text(encoding="utf-8"))
    assert overlaps(drawn) == []
    assert crossings(drawn) == []
    # They were 3.4:1 to 5.9:1 when laid out left to right.
    assert 0.5 <= drawn.ratio <= 2.0, f"{path.name} is {drawn.ratio:.2f}:1"


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("spec", _fixtures(), ids=lambda s: s.name)
def test_hard_machines_have_no_overlaps_in_any_direction(
    spec: MachineSpec, direction: Direction
) -> None:
    drawn = layout(render(spec, "dot", timeout_label=label, direction=direction))
    assert overlaps(drawn) == []
    assert crossings(drawn) == []


@pytest.mark.parametrize("spec", _fixtures(), ids=lambda s: s.name)
def test_top_to_bottom_is_never_a_strip(spec: MachineSpec) -> None:
    drawn = layout(render(spec, "dot", timeout_label=label))
    assert 0.4 <= drawn.ratio <= 2.0, f"{spec.name} is {drawn.ratio:.2f}:1"


#: How many generated machines: each is dense (2 to 11 states, up to four
#: transitions per state, guards, children, long labels), far denser than
#: real machines.
GENERATED = 40


@pytest.mark.parametrize("direction", ["TB", "LR"])
def test_generated_machines_have_no_overlapping_labels(direction: Direction) -> None:
    # Arrows may cross a label in machines this dense (Graphviz routes
    # around label positions, but not always clear of every label), so only
    # overlaps are checked here.  See the report for Graphviz's own rare
    # overlaps in even denser machines.
    problems = {
        spec.name: found
        for spec in map(random_machine, range(GENERATED))
        if (
            found := overlaps(layout(render(spec, "dot", timeout_label=label, direction=direction)))
        )
    }
    assert problems == {}


#: ``diagrams/blob-fetch.dot`` as it was committed, laid out left to right
#: with a state's loops as arcs (styles left out).
OLD_BLOB_FETCH = [
    ("idle", "requesting", "start / start"),
    ("requesting", "receiving", "answered"),
    ("requesting", "requesting", "request_failed / request_failed"),
    (
        "requesting",
        "requesting",
        "request_stalled / request_stalled\\ntimeout blob-headers: deadline p99x3, 500ms..10s",
    ),
    ("requesting", "done", "exhausted / exhausted"),
    ("receiving", "done", "body_done / body_done"),
    ("receiving", "requesting", "body_failed / body_failed"),
    ("receiving", "requesting", "stalled / stalled\\ntimeout blob-body: idle 8, 750ms..10s"),
    ("idle", "done", "cancel"),
    ("requesting", "done", "cancel"),
    ("receiving", "done", "cancel"),
    ("done", "done", "cancel (auto)"),
]


def test_the_overlap_check_sees_what_was_wrong_before() -> None:
    # Graphviz put the outer loop's label on the label of the arrow beside
    # it, and ran the outer arc through the inner loop's label.
    edges = "".join(f'"{a}" -> "{b}" [label="{text}"];\n' for a, b, text in OLD_BLOB_FETCH)
    drawn = layout(
        'digraph "blob-fetch" {\n'
        'graph [rankdir="LR", fontname="Helvetica"]; node [shape="box", fontname="Helvetica"];\n'
        f'edge [fontname="Helvetica", fontsize="10"];\n{edges}}}\n'
    )
    assert any("body_failed" in problem for problem in overlaps(drawn))
    assert any("request_failed / request_failed" in problem for problem in crossings(drawn))
    assert drawn.ratio > 3
