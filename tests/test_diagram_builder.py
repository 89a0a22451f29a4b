"""
Diagrams of real fsmcancel machines, and timeout labels from the real
timeout configuration.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import cast

import pytest
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from fsmcancel import OperationCancelled
from fsmcancel.diagram import find_machines, render, spec_of
from fsmcancel.timeouts import load_config, rule_label
from tests.diagram_fixtures import DOWNLOAD
from tests.diagram_fixtures_builder import FetchCore, fetch
from tests.diagram_fixtures_parsers import expected_edges, parse_dot, parse_mermaid


def test_builder_machine_is_found_and_drawn_exactly() -> None:
    [found] = find_machines("tests.diagram_fixtures_builder")
    assert found.spec is spec_of(fetch)
    spec = found.spec
    dot = parse_dot(render(fetch, "dot"))
    assert set(dot.nodes) == {s.name for s in spec.states} | {"__start__"}
    assert Counter((a, b) for a, b, _ in dot.edges if a != "__start__") == Counter(
        expected_edges(spec)
    )
    # The automatic cancel loops fsmcancel adds are listed in their state.
    assert {s.name for s in spec.states if "↻ cancel (no-op)" in dot.lines(s.name)} == {
        "closing",
        "done",
    }
    mermaid = parse_mermaid(render(fetch))
    assert mermaid.title == "fetch"
    assert mermaid.classes == {"closing": {"cleanup"}, "done": {"terminal"}}
    assert "owns: connection, read call" in mermaid.notes["receiving"]
    assert "↻ cancel (no-op)" in mermaid.notes["closing"]
    assert Counter((a, b) for a, b, _ in mermaid.edges if "[*]" not in (a, b)) == Counter(
        expected_edges(spec)
    )


def test_live_operation_is_drawn_in_its_state() -> None:
    op = fetch(FetchCore(), clock=cast(IReactorTime, Clock()))
    assert op.state == "connecting"
    assert parse_mermaid(render(op)).classes == {
        "connecting": {"current"},
        "closing": {"cleanup"},
        "done": {"terminal"},
    }
    op.cancel("test over")
    outcomes: list[Failure] = []
    op.completion.addErrback(outcomes.append)
    assert isinstance(outcomes[0].value, OperationCancelled)


def test_timeout_edges_show_the_configured_rule(tmp_path: Path) -> None:
    expected = rule_label(load_config(env={}), "read")
    assert f"stalled / give_up timeout read: {expected}" in {
        label for *_, label in parse_mermaid(render(fetch)).edges
    }
    config = tmp_path / "timeouts.toml"
    config.write_text('[kinds.read]\npolicy = "fixed"\n[kinds.read.deadline]\ninitial = "3s"\n')
    from fsmcancel.cli import main

    out = tmp_path / "out"
    argv = ["diagram", "tests.diagram_fixtures_builder", "--out", str(out), "--format", "mermaid"]
    assert main([*argv, "--timeouts", str(config)]) == 0
    assert "timeout read#58; fixed 3s" in (out / "fetch.mmd").read_text(encoding="utf-8")


def test_environment_does_not_change_diagrams(monkeypatch: pytest.MonkeyPatch) -> None:
    # This variable would make the rule "fixed 10s" if the environment counted.
    before = render(DOWNLOAD, "dot")
    monkeypatch.setenv("FSMCANCEL_TIMEOUTS__DEFAULT__POLICY", "fixed")
    assert render(DOWNLOAD, "dot") == before
