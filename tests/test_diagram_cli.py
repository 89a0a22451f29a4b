"""
``fsmcancel diagram``: writing, ``--check``, bad targets, missing Graphviz.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from fsmcancel.diagram import _cli as _diagram_cli
from fsmcancel.diagram._files import file_stems

TESTS = Path(__file__).parent
ROOT = TESTS.parent
HAVE_MAIN = importlib.util.find_spec("fsmcancel.timeouts._cli") is not None
needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz `dot` is not installed (apt-get install graphviz); CI installs it",
)


def cli(argv: Sequence[str]) -> int:
    """
    Run the command in-process: through ``fsmcancel.cli.main`` once the
    timeouts subcommand it also registers exists, else through our parser.
    """
    if HAVE_MAIN:
        from fsmcancel.cli import main

        return main(list(argv))
    parser = argparse.ArgumentParser(prog="fsmcancel")
    _diagram_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    status: int = args.func(args)
    return status


def diagram(out: Path, *extra: str, target: str = "tests.diagram_fixtures") -> int:
    return cli(["diagram", target, "--out", str(out), *extra])


def test_writes_dot_and_mermaid_per_machine(tmp_path: Path) -> None:
    out = tmp_path / "diagrams"
    assert diagram(out, "--format", "dot,mermaid") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "DoorInputs.dot",
        "DoorInputs.mmd",
        "Lamp.dot",
        "Lamp.mmd",
        "download.dot",
        "download.mmd",
        "tests.diagram_fixtures.dot",
        "tests.diagram_fixtures.mmd",
    ]
    assert (out / "download.mmd").read_text(encoding="utf-8").startswith("---\ntitle:")


def test_rewrites_only_what_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    diagram(tmp_path, "--format", "dot,mermaid")
    capsys.readouterr()
    (tmp_path / "DoorInputs.dot").write_text("stale", encoding="utf-8")
    assert diagram(tmp_path, "--format", "dot,mermaid") == 0
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote")]
    assert wrote == [f"wrote {tmp_path / 'DoorInputs.dot'}"]


def test_check_passes_on_fresh_and_fails_on_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    diagram(tmp_path, "--format", "dot,mermaid")
    assert diagram(tmp_path, "--check") == 0
    (tmp_path / "DoorInputs.mmd").write_text("stateDiagram-v2\n", encoding="utf-8")
    (tmp_path / "download.dot").unlink()
    capsys.readouterr()
    assert diagram(tmp_path, "--check") == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'DoorInputs.mmd'}: differs" in err
    assert f"{tmp_path / 'download.dot'}: missing" in err
    assert "Lamp" not in err
    assert "regenerate with: fsmcancel diagram tests.diagram_fixtures" in err


def test_check_ignores_crlf_line_ends(tmp_path: Path) -> None:
    diagram(tmp_path, "--format", "dot,mermaid")
    path = tmp_path / "DoorInputs.mmd"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert diagram(tmp_path, "--check") == 0


def test_check_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "never"
    assert diagram(out, "--check") == 1
    assert not out.exists()


@needs_dot
def test_png_is_written_only_when_asked_and_checked_only_when_asked(tmp_path: Path) -> None:
    assert diagram(tmp_path) == 0
    assert not list(tmp_path.glob("*.png"))
    assert diagram(tmp_path, "--format", "png") == 0
    png = tmp_path / "download.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert diagram(tmp_path, "--check", "--format", "png") == 0
    png.write_bytes(png.read_bytes()[:-1])
    assert diagram(tmp_path, "--check") == 0
    assert diagram(tmp_path, "--check", "--format", "png") == 1


def test_direction_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert diagram(tmp_path, "--format", "dot,mermaid", "--direction", "lr") == 0
    assert 'rankdir="LR"' in (tmp_path / "download.dot").read_text(encoding="utf-8")
    assert "direction LR" in (tmp_path / "download.mmd").read_text(encoding="utf-8")
    assert diagram(tmp_path, "--check", "--direction", "LR") == 0
    capsys.readouterr()
    # Checked against the default direction, the files are stale, and the
    # command to regenerate them keeps the direction asked for.
    assert diagram(tmp_path, "--check") == 1
    assert diagram(tmp_path, "--check", "--direction", "BT") == 1
    err = capsys.readouterr().err
    assert "regenerate with: fsmcancel diagram tests.diagram_fixtures" in err
    assert err.rstrip().endswith("--direction BT")


def test_bad_direction_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["diagram", "tests.diagram_fixtures", "--direction", "sideways"])
    assert info.value.code == 2
    assert "SIDEWAYS" in capsys.readouterr().err


@needs_dot
def test_check_compares_svg_only_when_asked(tmp_path: Path) -> None:
    assert diagram(tmp_path) == 0  # all three formats by default
    svg = tmp_path / "DoorInputs.svg"
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    svg.write_text("<svg/>", encoding="utf-8")
    assert diagram(tmp_path, "--check") == 0
    assert diagram(tmp_path, "--check", "--format", "dot,mermaid,svg") == 1


def test_missing_graphviz_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "out"
    assert diagram(out) == 1
    err = capsys.readouterr().err
    assert "`dot`" in err and "apt-get install graphviz" in err
    assert "SVG and PNG" in err
    assert sorted(p.suffix for p in out.iterdir()) == [".dot"] * 4 + [".mmd"] * 4


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_anywhere", "no module named"),
        ("tests.diagram_fixtures:not_a_machine", "is not an fsmcancel operation"),
        ("tests.diagram_fixtures_empty", "no fsmcancel operations or Automat machines found"),
    ],
)
def test_bad_target_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    assert diagram(tmp_path / "out", target=target) == 2
    err = capsys.readouterr().err
    assert target in err and message in err
    assert not (tmp_path / "out").exists()


def test_unknown_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["diagram", "tests.diagram_fixtures", "--format", "dot,gif"])
    assert info.value.code == 2
    assert "gif" in capsys.readouterr().err


def test_unreadable_timeouts_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert diagram(tmp_path, "--timeouts", str(missing)) == 2
    assert "--timeouts" in capsys.readouterr().err


def test_file_names_are_safe_and_unique() -> None:
    assert file_stems(["a/b", "A/B", "x y:z", "..", "ok-1.2"]) == [
        "a_b",
        "A_B-2",
        "x_y_z",
        "machine",
        "ok-1.2",
    ]


@pytest.mark.skipif(not HAVE_MAIN, reason="fsmcancel.timeouts._cli (imported by _cli) not written")
def test_check_as_a_subprocess(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fsmcancel.cli", "diagram", "tests.diagram_fixtures", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    assert run("--format", "dot,mermaid").returncode == 0
    assert run("--check").returncode == 0
    (tmp_path / "diagrams" / "download.mmd").write_text("old", encoding="utf-8")
    stale = run("--check")
    assert stale.returncode == 1
    assert str(Path("diagrams") / "download.mmd") in stale.stderr


def test_a_machine_reached_twice_is_written_once(tmp_path: Path) -> None:
    targets = ["tests.diagram_fixtures", "tests.diagram_fixtures:door"]
    assert cli(["diagram", *targets, "--out", str(tmp_path), "--format", "mermaid"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "DoorInputs.mmd",
        "Lamp.mmd",
        "download.mmd",
        "tests.diagram_fixtures.mmd",
    ]


def test_targets_import_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "diagram_fixtures_local.py").write_text(
        "from tests.diagram_fixtures import door\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "diagram_fixtures_local", raising=False)
    assert diagram(Path("out"), "--format", "dot", target="diagram_fixtures_local") == 0
    assert (tmp_path / "out" / "DoorInputs.dot").is_file()
    assert str(tmp_path) not in sys.path
