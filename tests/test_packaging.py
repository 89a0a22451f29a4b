"""
fsmcancel as a package one can release: its metadata, its version (one
source), its command, and an sdist that carries a test suite that runs.
"""

from __future__ import annotations

import ast
import email
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import fsmcancel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def run(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# -- metadata --------------------------------------------------------------------


def test_the_build_requires_a_setuptools_that_understands_the_license() -> None:
    # `license = "MIT"` (a PEP 639 expression) needs setuptools 77; with 69
    # the build fails.
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]


def test_the_license_file_is_mit_and_declared() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "the fsmcancel authors" in text
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_classifiers_and_urls() -> None:
    project = PYPROJECT["project"]
    classifiers = set(project["classifiers"])
    assert {"Framework :: Twisted", "Typing :: Typed"} <= classifiers
    # No license classifier next to a license expression (PEP 639 refuses
    # both), and a version classifier for each Python requires-python allows.
    assert not any(c.startswith("License ::") for c in classifiers)
    assert project["requires-python"] == ">=3.10"
    assert "Programming Language :: Python :: 3.10" in classifiers
    assert project["urls"]


# -- the version -------------------------------------------------------------------


def test_the_version_has_one_source() -> None:
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    source = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert source == "fsmcancel._version.__version__"
    assert fsmcancel.__version__ == importlib.metadata.version("fsmcancel")


@pytest.mark.parametrize("command", [["-m", "fsmcancel"], ["-m", "fsmcancel.cli"]])
def test_version_on_the_command_line(command: list[str]) -> None:
    done = run(sys.executable, *command, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"fsmcancel {fsmcancel.__version__}\n"


def test_python_dash_m_fsmcancel_is_the_command() -> None:
    shown = run(sys.executable, "-m", "fsmcancel", "timeouts", "show")
    assert shown.returncode == 0, shown.stderr
    assert "default" in shown.stdout
    bare = run(sys.executable, "-m", "fsmcancel")
    assert bare.returncode == 2 and "usage: fsmcancel" in bare.stderr


# -- the sdist ---------------------------------------------------------------------


def imported_modules(path: Path) -> set[str]:
    """
    The ``tests.*`` and ``examples.*`` modules a file imports.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found |= {n for n in names if n.split(".")[0] in ("tests", "examples")}
    return found


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    The sdist, built from this checkout and unpacked in a temporary
    directory; its root.
    """
    if importlib.util.find_spec("build") is None:
        pytest.skip("the `build` package is not installed (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("dist")
    # Without isolation: the build uses this environment's setuptools
    # (>= 77, from the test extra) instead of downloading one.
    built = run(sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out))
    assert built.returncode == 0, built.stdout + built.stderr
    [archive] = out.glob("fsmcancel-*.tar.gz")
    unpacked = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    [root] = unpacked.iterdir()
    return root


def test_the_sdist_metadata(sdist: Path) -> None:
    info = email.message_from_string((sdist / "PKG-INFO").read_text())
    assert info["Version"] == fsmcancel.__version__
    assert info["License-Expression"] == "MIT"
    assert info["License-File"] == "LICENSE"
    classifiers = info.get_all("Classifier") or []
    assert "Framework :: Twisted" in classifiers and "Typing :: Typed" in classifiers
    assert info.get_all("Project-URL")
    assert (sdist / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert (sdist / "fsmcancel" / "py.typed").exists()


def test_the_sdist_ships_every_helper_its_tests_import(sdist: Path) -> None:
    tests = sorted((sdist / "tests").glob("*.py"))
    assert {p.name for p in tests} == {p.name for p in (ROOT / "tests").glob("*.py")}
    for path in tests:
        for module in imported_modules(path):
            parts = module.split(".")
            as_module = sdist.joinpath(*parts).with_suffix(".py")
            as_package = sdist.joinpath(*parts, "__init__.py")
            assert as_module.exists() or as_package.exists(), f"{path.name} imports {module}"
    for data in ("examples/poems/raven.txt", "examples/mirror_timeouts.toml", ".ci/run"):
        assert (sdist / data).exists(), data
    assert not list(sdist.rglob("__pycache__"))


def test_the_sdist_test_suite_runs(sdist: Path) -> None:
    # The package under test is the sdist's own, not this checkout's.
    where = run(sys.executable, "-c", "import fsmcancel; print(fsmcancel.__file__)", cwd=sdist)
    assert where.stdout.strip() == str(sdist / "fsmcancel" / "__init__.py"), where.stderr

    # Every test collects there as here (in parallel: collection is slow).
    collect = [sys.executable, "-m", "pytest", "--collect-only", "-q"]
    there, here = (
        subprocess.Popen(
            collect, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for cwd in (sdist, ROOT)
    )
    (there_out, there_err), (here_out, _) = (
        there.communicate(timeout=300),
        here.communicate(timeout=300),
    )
    assert there.returncode == 0, there_out[-3000:] + there_err
    assert there_out.splitlines()[-1] == here_out.splitlines()[-1]

    quick = [
        "tests/test_readme.py",
        "tests/test_service_shutdown.py::test_reactor_shutdown_closes_every_connection_before_exit[usr1]",
    ]
    ran = run(sys.executable, "-m", "pytest", "-q", *quick, cwd=sdist)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr
