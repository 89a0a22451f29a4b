"""
Every Mermaid file we generate, read by Mermaid's own parser (the ``mermaid``
npm package under node, ``tests/mermaid/parse.mjs``), says what the machine
says: the committed diagrams, and fixtures with guards, child machines,
loops and names full of characters Mermaid treats specially.

This is the check that our escaping matches Mermaid's grammar rather than
our reading of it.  It needs node and ``npm ci --prefix tests/mermaid``
(``.ci/run`` does both).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fsmcancel.core._spec import MachineSpec
from fsmcancel.diagram import DIRECTIONS, find_machines, render
from fsmcancel.diagram._files import file_stems
from fsmcancel.diagram._model import DiagramView, build_view
from fsmcancel.diagram._timeout_labels import declared_label
from tests.diagram_fixtures_stress import FIXED, random_machine

ROOT = Path(__file__).resolve().parent.parent
PARSER = ROOT / "tests" / "mermaid"
NODE = shutil.which("node")
INSTALLED = (PARSER / "node_modules" / "mermaid").is_dir() and (
    PARSER / "node_modules" / "jsdom"
).is_dir()

pytestmark = pytest.mark.skipif(
    NODE is None or not INSTALLED,
    reason=(
        "Mermaid's parser is not installed: needs node and `npm ci --prefix tests/mermaid`"
        if NODE
        else "node is not installed, so Mermaid's parser cannot run (CI installs it)"
    ),
)


def mermaid_read(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """
    What Mermaid's parser made of each file, by path.
    """
    assert NODE is not None
    result = subprocess.run(
        [NODE, str(PARSER / "parse.mjs"), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    read = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {entry["file"]: entry for entry in read}


def _machines() -> list[MachineSpec]:
    found = [f.spec for t in ("examples", "tests.diagram_fixtures") for f in find_machines(t)]
    return [*found, *FIXED, *map(random_machine, range(10))]


def _expected(view: DiagramView) -> tuple[dict[str, list[str]], Counter[tuple[str, str, str]]]:
    """
    The states (name, then description lines) and transitions (by state
    name, with label) Mermaid must read, and the start and end markers.
    """
    from fsmcancel.diagram._mermaid import CANCEL_MARK, CHILD_MARK
    from fsmcancel.diagram._model import LOOP_MARK, node_lines

    states = {
        node.name: [
            node.name,
            *node_lines(node),
            *(f"{LOOP_MARK} {' '.join(loop.lines)}" for loop in node.loops),
            *(f"runs {CHILD_MARK} {child}" for child in node.children),
        ]
        for node in view.nodes
    }
    edges: Counter[tuple[str, str, str]] = Counter(
        (e.source, e.target, (f"{CANCEL_MARK} " if e.cancel else "") + " ".join(e.lines))
        for e in view.edges
    )
    edges.update(("[*]", node.name, "") for node in view.nodes if node.initial)
    edges.update((node.name, "[*]", "") for node in view.nodes if node.kind == "terminal")
    return states, edges


def _read_back(entry: dict[str, Any]) -> tuple[dict[str, list[str]], Counter[tuple[str, str, str]]]:
    names = {
        state_id: state["descriptions"][0]
        for state_id, state in entry["states"].items()
        if state["descriptions"]
    }

    def name(state_id: str) -> str:
        return "[*]" if state_id in ("root_start", "root_end") else names[state_id]

    states = {names[i]: s["descriptions"] for i, s in entry["states"].items() if i in names}
    edges = Counter((name(a), name(b), title) for a, b, title in entry["relations"])
    return states, edges


BROKEN = "stateDiagram-v2\n    a --> : broken\n"


@pytest.fixture(scope="module")
def read(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """
    Every file the tests below look at, read by one run of the parser
    (starting node and importing Mermaid takes seconds).
    """
    out = tmp_path_factory.mktemp("mermaid")
    files = {f"{n}.mmd": render(spec) for n, spec in enumerate(_machines())}
    for direction in DIRECTIONS:
        files[f"{direction}.mmd"] = render(FIXED[-1], direction=direction, highlight="x-y")
    files["broken.mmd"] = BROKEN
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    committed = sorted((ROOT / "diagrams").glob("*.mmd"))
    read = mermaid_read([out / name for name in files] + committed)
    # By file name, committed ones as "diagrams/NAME".
    return {
        (
            f"diagrams/{Path(path).name}"
            if Path(path).parent.name == "diagrams"
            else Path(path).name
        ): entry
        for path, entry in read.items()
    }


def test_generated_mermaid_means_what_the_machine_says(read: dict[str, dict[str, Any]]) -> None:
    for n, spec in enumerate(_machines()):
        entry = read[f"{n}.mmd"]
        assert entry["ok"], f"{spec.name}: {entry.get('error')}"
        assert entry["type"] == "stateDiagram" and entry["direction"] == "TB"
        view = build_view(spec, None, declared_label(spec))
        assert _read_back(entry) == _expected(view), spec.name


def test_committed_mermaid_diagrams_parse_and_match(read: dict[str, dict[str, Any]]) -> None:
    committed = sorted(key for key in read if key.startswith("diagrams/"))
    assert committed
    # Named as `fsmcancel diagram examples` names them.
    examples = [found.spec for found in find_machines("examples")]
    stems = file_stems([spec.name for spec in examples])
    by_file = {f"diagrams/{stem}.mmd": spec for stem, spec in zip(stems, examples, strict=True)}
    for key in committed:
        entry = read[key]
        assert entry["ok"], f"{key}: {entry.get('error')}"
        spec = by_file[key]
        assert _read_back(entry) == _expected(build_view(spec, None, declared_label(spec)))


def test_highlight_and_directions_parse(read: dict[str, dict[str, Any]]) -> None:
    for direction in DIRECTIONS:
        entry = read[f"{direction}.mmd"]
        assert entry["ok"], entry.get("error")
        assert entry["direction"] == direction
        [state] = [s for s in entry["states"].values() if s["descriptions"][:1] == ["x-y"]]
        assert sorted(state["classes"]) == ["cleanup", "current"]


def test_mermaid_rejects_what_is_not_mermaid(read: dict[str, dict[str, Any]]) -> None:
    # The parser really parses: a broken transition is an error.
    entry = read["broken.mmd"]
    assert not entry["ok"] and "Parse error" in entry["error"]
