"""
Instructions per transition and per lifecycle, counted by callgrind, for this
tree and for a baseline tree, side by side.

    python tests/benchmarks/count_instructions.py [--baseline PATH] [--n N]

Wall-clock ratios swing with whatever else the machine is doing; callgrind
counts instructions, which are the same from run to run for the same code.
Each tree runs ``bench_core.py``'s own machine (so a baseline is measured on
its own definitions), once with N inputs and once with none, and the
difference over N is the cost of one.  ``--baseline`` is a checkout of an
older commit (``git worktree add --detach /tmp/base <commit>``).  Needs
``valgrind``; says so and exits 2 without it.

Not a timed test: it prints what it counts and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]

PROBE = """
import logging, sys
tree = sys.argv[1]
sys.path[:0] = [tree, tree + "/tests/benchmarks"]
import structlog
structlog.configure(
    wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    cache_logger_on_first_use=True,
)
import bench_core as b
from twisted.internet.task import Clock
what, n = sys.argv[2], int(sys.argv[3])
factory, clock = b.fsmcancel_factory(), Clock()
if what == "transition":
    op = factory(b.Core(), clock=clock)
    i = op.inputs
    i.step()
    for _ in range(n):
        i.step()
        i.back()
else:
    for _ in range(n):
        op = factory(b.Core(), clock=clock)
        op.completion.addCallback(lambda r: None)
        i = op.inputs
        i.step(); i.step(); i.step(); i.step(); i.step(); i.finish()
"""


def count(tree: Path, what: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.py"
        probe.write_text(PROBE)
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, str(probe), str(tree), what, str(n)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind: {done.stderr[-500:]}")
    return int(found.group(1))


def per_unit(tree: Path, what: str, n: int) -> float:
    units = 2 * n if what == "transition" else n
    return (count(tree, what, n) - count(tree, what, 0)) / units


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="a checkout to compare against")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    trees = [("this tree", HERE)]
    if args.baseline is not None:
        trees.insert(0, ("baseline", args.baseline.resolve()))
    print(f"{'instructions per':<18}" + "".join(f"{name:>14}" for name, _ in trees) + "   ratio")
    for what in ("transition", "lifecycle"):
        counts = [per_unit(tree, what, args.n) for _, tree in trees]
        ratio = f"{counts[-1] / counts[0]:8.3f}" if len(counts) == 2 else ""
        print(f"{what:<18}" + "".join(f"{c:>14,.0f}" for c in counts) + ratio)
    print("(a lifecycle: create, five transitions, complete, the completion callback runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
