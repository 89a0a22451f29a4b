"""
Finding machines in targets, and drawing plain Automat machines.
"""

from __future__ import annotations

import pytest

from fsmcancel.core._spec import StateSpec, TransitionSpec
from fsmcancel.diagram import TargetError, find_machines, render, spec_of
from tests import diagram_fixtures
from tests.diagram_fixtures_parsers import expected_edges, parse_dot, parse_mermaid


def test_module_target_finds_every_kind_of_machine_once() -> None:
    found = find_machines("tests.diagram_fixtures")
    # ``download`` shares DOWNLOAD's spec, so it is the same machine.
    assert [m.where for m in found] == [
        "tests.diagram_fixtures:DOWNLOAD",
        "tests.diagram_fixtures:door",
        "tests.diagram_fixtures:Lamp._machine",
        "tests.diagram_fixtures:machine",
    ]
    # Plain Automat machines are titled by their input protocol, class or
    # module, not by the attribute that holds them.
    assert [m.spec.name for m in found] == [
        "download",
        "DoorInputs",
        "Lamp",
        "tests.diagram_fixtures",
    ]


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("tests.diagram_fixtures:download", "download"),
        ("tests.diagram_fixtures:door", "DoorInputs"),
        ("tests.diagram_fixtures:Lamp", "Lamp"),
        ("tests.diagram_fixtures:Lamp._machine", "Lamp"),
        ("tests.diagram_fixtures:machine", "tests.diagram_fixtures"),
    ],
)
def test_attribute_targets(target: str, name: str) -> None:
    [found] = find_machines(target)
    assert found.spec.name == name


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_anywhere", "no module named 'no_such_module_anywhere'"),
        ("tests.diagram_fixtures.nope", "no module named 'tests.diagram_fixtures.nope'"),
        ("tests.diagram_fixtures:missing", "has no attribute 'missing'"),
        (
            "tests.diagram_fixtures:not_a_machine",
            "is not an fsmcancel operation or Automat machine",
        ),
        ("tests.diagram_fixtures:DoorCore", "no fsmcancel operations or Automat machines found"),
        ("tests.diagram_fixtures_empty", "no fsmcancel operations or Automat machines found"),
        (":door", "no module named"),
    ],
)
def test_bad_targets_are_named(target: str, message: str) -> None:
    with pytest.raises(TargetError, match=message) as info:
        find_machines(target)
    assert target in str(info.value)


def test_typed_machine_spec() -> None:
    spec = spec_of(diagram_fixtures.door, "door")
    assert spec.name == "door"
    assert spec.initial == "closed"
    assert spec.states == (
        StateSpec("closed", "running"),
        StateSpec("locked", "terminal"),
        StateSpec("opened", "running"),
    )
    # .returns(None) transitions have no output; decorated ones are named.
    assert spec.transitions == (
        TransitionSpec("closed", "lock", "locked", "turn_key"),
        TransitionSpec("closed", "open", "opened", None),
        TransitionSpec("opened", "close", "closed", None),
    )
    assert spec_of(diagram_fixtures.door).name == "DoorInputs"


def test_methodical_machine_spec() -> None:
    spec = spec_of(diagram_fixtures.Lamp._machine)
    assert spec.initial == "off"
    assert [s.name for s in spec.states] == ["off", "on"]
    assert spec.transitions == (
        TransitionSpec("off", "flip", "on", "_light"),
        TransitionSpec("on", "flip", "off", "_darken"),
    )


@pytest.mark.parametrize(
    "machine", [diagram_fixtures.door, diagram_fixtures.Lamp._machine, diagram_fixtures.machine]
)
def test_automat_machines_render(machine: object) -> None:
    spec = spec_of(machine)
    dot = parse_dot(render(machine, "dot"))
    assert {s.name for s in spec.states} <= set(dot.nodes)
    mermaid = parse_mermaid(render(machine, "mermaid"))
    assert sorted(mermaid.names.values()) == sorted(s.name for s in spec.states)
    assert [(a, b) for a, b, _ in mermaid.edges if "[*]" not in (a, b)] == expected_edges(spec)
