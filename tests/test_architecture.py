"""
The README's drawing of how the package is built is true: the packages it
names exist, each depends only on what the table allows (read from the
imports), and no module grows past about 400 lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fsmcancel"
README = (ROOT / "README.md").read_text()

#: What each unit may import from fsmcancel (besides itself).
ALLOWED = {
    "core": set(),
    "timeouts": {"core"},
    "diagram": {"core", "timeouts"},
    "testing": {"core"},
    "service": {"core"},
    "inspector": {"core", "diagram"},
    "cli": {"diagram", "timeouts", "_version"},
    "_logging": set(),
}


def unit_of(path: Path) -> str:
    part = path.relative_to(PACKAGE).parts[0]
    return part.removesuffix(".py")


def fsmcancel_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "fsmcancel" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("unit", sorted(ALLOWED))
def test_each_unit_depends_only_on_what_the_table_allows(unit: str) -> None:
    paths = sorted((PACKAGE / unit).rglob("*.py")) or [PACKAGE / f"{unit}.py"]
    for path in paths:
        used = fsmcancel_imports(path) - {unit}
        assert used <= ALLOWED[unit], (path, used - ALLOWED[unit])


def test_the_drawing_names_the_packages_there_are() -> None:
    drawing = README.split("## How the package is built", 1)[1].split("\n## ", 1)[0]
    drawn = set(re.findall(r"[├└]── ([\w.]+?)/?\s", drawing))
    there = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    there |= {p.name for p in PACKAGE.glob("*.py") if not p.name.startswith("__")}
    there -= {"_version.py"}
    assert drawn == there


def test_no_module_grows_past_about_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 430
    }
    assert long == {}
