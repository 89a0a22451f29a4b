"""
The README's promises about itself: two quick-start commands, the test one
is what CI runs, and the example shown is the example the tests run.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)


def test_exactly_two_commands() -> None:
    demo, tests = quick_start_commands()
    assert "\n" not in demo and "\n" not in tests
    assert demo.endswith("python -m examples.demo")
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = quick_start_commands()
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_example_is_the_tested_example() -> None:
    example = README.split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)\n```", example, re.S)
    assert code is not None
    assert code.group(1) in (ROOT / "examples" / "fetch_line.py").read_text()


def test_readme_diagram_is_generated_from_the_example() -> None:
    from examples.fetch_line import fetch_line_machine
    from fsmcancel.diagram import render

    embedded = re.search(r"```mermaid\n(.*?)\n```", README, re.S)
    assert embedded is not None
    assert embedded.group(1) == render(fetch_line_machine, "mermaid").rstrip()


def test_guarantees_name_tests_that_exist() -> None:
    table = README.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    references = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", table)
    assert len(references) >= 10
    for path, name in references:
        source = (ROOT / path).read_text()
        if name:
            assert re.search(rf"(def|class) {name}\b|^{name} = ", source, re.M), (path, name)
    for name in re.findall(r"`(Test\w+|test_\w+)`", table):
        assert any(
            re.search(rf"(def|class) {name}\b|^{name} = ", p.read_text(), re.M)
            for p in (ROOT / "tests").glob("test_*.py")
        ), name
