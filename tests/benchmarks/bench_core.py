"""
Core overhead, measured against baselines in the same run.

    python tests/benchmarks/bench_core.py [--quick]

Prints, with logging filtered out (structlog's filtering bound logger at
INFO, cached, as its docs recommend for production):

1. per transition: an fsmcancel operation against the *same* machine built
   with bare ``automat.TypeMachineBuilder`` (same states, same inputs, same
   cancel transitions); target <= 1.3x.  fsmcancel indexes the transition
   table that Automat scans linearly, so a second row gives bare Automat the
   same index: that ratio is fsmcancel's own bookkeeping (state tracking,
   scope switch, re-entrancy guard), shown for information;
2. a full lifecycle (create, five transitions, complete, the completion
   callback runs) against a hand-written Deferred chain doing the same work:
   a cancellable completion Deferred plus one Deferred fired per step;
   target <= 2x;
3. memory per live idle operation with 100,000 live (tracemalloc); target
   100,000 in under 300 MB.

Ratios, not absolute times, are the figures to compare: these machines are
noisy, so each pair is measured interleaved, best of several rounds.
"""

from __future__ import annotations

import gc
import logging
import sys
import timeit
import tracemalloc
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol

import structlog
from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from fsmcancel import Cancellable, Operation, OperationBuilder
from fsmcancel.core._factory import index_transitions as _index_transitions

structlog.configure(
    wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    cache_logger_on_first_use=True,
)


class Steps(Cancellable, Protocol):
    def step(self) -> None: ...
    def back(self) -> None: ...
    def finish(self) -> None: ...


@dataclass
class Core:
    count: int = 0


STATES = ["s0", "s1", "s2", "s3", "s4", "s5"]


def fsmcancel_factory() -> Any:
    b = OperationBuilder(Steps, Core, name="bench")
    states = [b.state(name) for name in STATES]
    done = b.terminal_state("done")
    for here, there in pairwise(states):

        @here.upon(Steps.step).to(there)
        def step(inputs: Steps, op: Operation[Steps, Core]) -> None:
            op.core.count += 1

        @there.upon(Steps.back).to(here)
        def back(inputs: Steps, op: Operation[Steps, Core]) -> None:
            op.core.count += 1

    @states[-1].upon(Steps.finish).to(done)
    def finish(inputs: Steps, op: Operation[Steps, Core]) -> None:
        op.succeed(op.core.count)

    for s in states:
        s.upon(Steps.cancel).to(done).returns(None)
    return b.build()


def bare_factory() -> Any:
    b = TypeMachineBuilder(Steps, Core)
    states = [b.state(name) for name in STATES]
    done = b.state("done")
    for here, there in pairwise(states):

        @here.upon(Steps.step).to(there)
        def step(inputs: Steps, core: Core) -> None:
            core.count += 1

        @there.upon(Steps.back).to(here)
        def back(inputs: Steps, core: Core) -> None:
            core.count += 1

    @states[-1].upon(Steps.finish).to(done)
    def finish(inputs: Steps, core: Core) -> None:
        pass

    for s in states:
        s.upon(Steps.cancel).to(done).returns(None)
    done.upon(Steps.cancel).loop().returns(None)
    return b.build()


def best(fn: Any, number: int, rounds: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=rounds)) / number


def per_transition(rounds: int, n: int, indexed: bool = False) -> tuple[float, float]:
    clock = Clock()
    op = fsmcancel_factory()(Core(), clock=clock)
    fi = op.inputs
    machine = bare_factory()
    if indexed:
        _index_transitions(machine)
    bare = machine(Core())

    def run_fsm() -> None:
        fi.step()
        fi.back()

    def run_bare() -> None:
        bare.step()
        bare.back()

    f = b = float("inf")
    for _ in range(rounds):
        f = min(f, best(run_fsm, n, 1) / 2)
        b = min(b, best(run_bare, n, 1) / 2)
    return f, b


def lifecycle(rounds: int, n: int) -> tuple[float, float]:
    factory = fsmcancel_factory()
    clock = Clock()
    sink: list[object] = []

    def run_fsm() -> None:
        op = factory(Core(), clock=clock)
        op.completion.addCallback(sink.append)
        i = op.inputs
        i.step()
        i.step()
        i.step()
        i.step()
        i.step()
        i.finish()

    def run_chain() -> None:
        # The hand-written equivalent: a cancellable completion, a state
        # field, and one Deferred per asynchronous step, fired in turn.
        state = {"name": "s0", "count": 0, "pending": None}

        def canceller(d: Deferred[int]) -> None:
            pending = state["pending"]
            if isinstance(pending, Deferred):
                pending.cancel()

        completion: Deferred[int] = Deferred(canceller)
        completion.addCallback(sink.append)

        def advance(_: object, name: str) -> None:
            state["name"] = name
            state["count"] += 1  # type: ignore[operator]

        for name in ("s1", "s2", "s3", "s4", "s5"):
            step: Deferred[None] = Deferred()
            state["pending"] = step
            step.addCallback(advance, name)
            step.callback(None)
        state["pending"] = None
        completion.callback(state["count"])  # type: ignore[arg-type]

    f = c = float("inf")
    for _ in range(rounds):
        f = min(f, best(run_fsm, n, 1))
        c = min(c, best(run_chain, n, 1))
        sink.clear()
    return f, c


def memory(count: int) -> tuple[float, float]:
    factory = fsmcancel_factory()
    clock = Clock()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    ops = [factory(Core(), clock=clock) for _ in range(count)]
    for op in ops:
        op.inputs.step()  # live, idle, in a non-initial state
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert all(op.state == "s1" for op in ops)
    return total / count, total / 1e6


def main() -> None:
    quick = "--quick" in sys.argv
    rounds, n = (3, 20_000) if quick else (7, 100_000)
    count = 10_000 if quick else 100_000
    f, b = per_transition(rounds, n)
    print(f"{'measure':<44}{'fsmcancel':>12}{'baseline':>12}{'ratio':>8}{'target':>9}")
    ok1 = f / b <= 1.3
    print(
        f"{'per transition vs bare Automat (us)':<44}{f * 1e6:>12.3f}{b * 1e6:>12.3f}"
        f"{f / b:>8.2f}{'<=1.30':>9} {'ok' if ok1 else 'MISSED'}"
    )
    f, b = per_transition(rounds, n, indexed=True)
    print(
        f"{'  same, bare Automat given the same index (us)':<44}{f * 1e6:>12.3f}{b * 1e6:>12.3f}"
        f"{f / b:>8.2f}{'(info)':>9}"
    )
    f, c = lifecycle(rounds, n // 10)
    ok2 = f / c <= 2.0
    print(
        f"{'lifecycle vs hand-written chain (us)':<44}{f * 1e6:>12.3f}{c * 1e6:>12.3f}"
        f"{f / c:>8.2f}{'<=2.00':>9} {'ok' if ok2 else 'MISSED'}"
    )
    per_op, total = memory(count)
    projected = per_op * 100_000 / 1e6
    ok3 = projected < 300
    print(f"{'memory per live idle operation (bytes)':<44}{per_op:>12.0f}")
    print(
        f"{f'{count:,} live operations (MB)':<44}{total:>12.1f}"
        f"{'':>12}{'':>8}{'<300 MB':>9} {'ok' if ok3 else 'MISSED'}"
        + ("" if count == 100_000 else f"  (100,000 projected: {projected:.0f} MB)")
    )


if __name__ == "__main__":
    main()
