"""
Stall detection and timer costs of fsmcancel.timeouts, as a printed table.

Run:  python tests/benchmarks/bench_timeouts.py [--calls N] [--seed S]

Not a timed test: it prints what it measures, the ratios against the fixed
10 s baseline measured in the same run, and whether each target is met.
See ``timeouts_sim.py`` for the workload.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from timeouts_sim import (  # type: ignore[import-not-found, unused-ignore]
    Result,
    StandInOperation,
    run_fsmcancel,
    run_hedged,
    run_phi_latency,
    run_rfc6298,
    workload,
)
from twisted.internet.defer import Deferred

from fsmcancel.timeouts import Timeouts, load_config, rule_label


def fixed(seconds: str) -> Any:
    return load_config(
        env={}, data={"default": {"policy": "fixed", "deadline": {"initial": seconds, "max": "1h"}}}
    )


def table(results: list[Result], baseline: Result) -> None:
    head = (
        f"{'policy':<44} {'detect mean':>11} {'p99':>8} {'false/live':>10} "
        f"{'false/slow':>10} {'wasted/1000':>11} {'speed-up':>8} {'fewer FT':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        speed = baseline.mean_detect / r.mean_detect
        fewer = baseline.false_rate / r.false_rate if r.false_live else float("inf")
        print(
            f"{r.name:<44} {r.mean_detect:>10.2f}s {r.p99_detect:>7.2f}s "
            f"{r.false_rate:>10.4%} {r.false_slow_rate:>10.2%} {r.wasted_per_1000:>10.1f}s "
            f"{speed:>7.2f}x {fewer:>7.1f}x"
        )
        if r.note:
            print(f"{'':<44} {r.note}")


def check(label: str, ok: bool, detail: str) -> bool:
    print(f"  [{'met' if ok else 'MISSED'}] {label}: {detail}")
    return ok


def progress_cost(armed: int, events: int = 200_000) -> dict[str, float]:
    """
    Microseconds per `GuardedCall.progress` with ``armed`` calls armed on
    the real (not running) reactor, events hitting calls in random and in
    sequential order; a bare attribute store in random order (what the memory
    hierarchy alone costs at that size); and ``IDelayedCall.reset``, the
    per-chunk alternative this design avoids.
    """
    from twisted.internet import reactor as global_reactor

    reactor = cast(Any, global_reactor)
    op = StandInOperation(reactor)
    timeouts = Timeouts(load_config(env={}))
    calls = [
        timeouts.call(
            op,
            Deferred,
            kind="read",
            peer=f"p{i % 100}",
            on_result=print,
            on_failure=print,
            on_timeout=print,
        )
        for i in range(armed)
    ]
    rng = random.Random(0)

    def per_event(run: Callable[[], object], n: int) -> float:
        gc.collect()
        gc.disable()  # as timeit does: measure the code, not a collection
        try:
            t0 = time.perf_counter()
            run()
            return (time.perf_counter() - t0) / n * 1e6
        finally:
            gc.enable()

    def progress_all(order: list[Callable[[], object]]) -> None:
        for progress in order:
            progress()

    def store_all(order: list[Any]) -> None:
        for call in order:
            call.kind = "read"

    def reset_all(order: list[Any]) -> None:
        for i, timer in enumerate(order):
            timer.reset(3600 + i * 1e-3)

    # A call's first progress ends its first-sign allowance and may re-arm
    # its timer (once per call); chunks after it are the per-event cost.
    first = per_event(lambda: progress_all([call.progress for call in calls]), armed)
    random_order: list[Callable[[], object]] = [
        calls[rng.randrange(armed)].progress for _ in range(events)
    ]
    sequential: list[Callable[[], object]] = [calls[i % armed].progress for i in range(events)]
    stores = [calls[rng.randrange(armed)] for _ in range(events)]
    result = {
        "random": per_event(lambda: progress_all(random_order), events),
        "sequential": per_event(lambda: progress_all(sequential), events),
        "control": per_event(lambda: store_all(stores), events),
        "first": first,
    }
    timers = [reactor.callLater(3600 + i, print) for i in range(armed)]
    resets = [timers[rng.randrange(armed)] for _ in range(50_000)]
    result["reset"] = per_event(lambda: reset_all(resets), len(resets))
    for timer in timers:
        timer.cancel()
    for resource in list(op.owned.values()):
        op.release(resource[0])
    reactor.runUntilCurrent()  # drop the cancelled timers
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()

    started = time.perf_counter()
    specs = workload(args.calls, args.seed)
    backups = workload(args.calls, args.seed + 1)
    stalls = sum(s.stall for s in specs)
    slow = sum(s.slow for s in specs)
    print(
        f"workload: {args.calls} calls (seed {args.seed}), {stalls} stalls, {slow} slow, "
        f"host 5x slower after call {args.calls // 2}\n"
    )

    default = load_config(env={})
    deadline = load_config(env={}, data={"default": {"policy": "deadline"}})
    hedge = load_config(env={}, data={"default": {"policy": "hedge"}})
    base10 = run_fsmcancel("fixed 10 s (Tahoe OVERDUE)", fixed("10s"), specs)
    results = [
        run_fsmcancel("fixed 1200 s (TCP-like)", fixed("1200s"), specs),
        run_fsmcancel("fixed 30 s", fixed("30s"), specs),
        base10,
        run_rfc6298(specs),
        run_phi_latency(specs),
        run_fsmcancel(f"fsmcancel {rule_label(deadline, 'read')}", deadline, specs),
        run_fsmcancel(f"fsmcancel {rule_label(default, 'read')}", default, specs),
        run_hedged("fsmcancel hedge (2 peers), idle guard", hedge, specs, backups),
    ]
    table(results, base10)
    idle = results[-2]

    print("\ntargets (default policy, same run):")
    ok = all(
        [
            check("stall detected, mean <= 2.5 s", idle.mean_detect <= 2.5,
                  f"{idle.mean_detect:.2f} s"),
            check("stall detected, p99 <= 4 s", idle.p99_detect <= 4.0,
                  f"{idle.p99_detect:.2f} s"),
            check("false timeouts among live calls <= 0.01%", idle.false_rate <= 1e-4,
                  f"{idle.false_rate:.4%} ({idle.false_live}/{idle.live})"),
            check(">= 4x faster than fixed 10 s", base10.mean_detect / idle.mean_detect >= 4,
                  f"{base10.mean_detect / idle.mean_detect:.2f}x"),
            check(">= 9x fewer false timeouts than fixed 10 s",
                  idle.false_live * 9 <= base10.false_live,
                  f"{base10.false_live} vs {idle.false_live}"),
        ]
    )  # fmt: skip

    print("\nprogress event cost (GuardedCall.progress; reactor not touched):")
    costs = []
    for armed in (1_000, 10_000, 100_000):
        cost = progress_cost(armed)
        costs.append(cost)
        print(
            f"  {armed:>7} armed: {cost['random']:5.3f} us/event random order, "
            f"{cost['sequential']:5.3f} sequential "
            f"(control store {cost['control']:5.3f}; IDelayedCall.reset {cost['reset']:5.3f}); "
            f"first progress of a call {cost['first']:5.3f}"
        )
    worst = max(max(c["random"], c["sequential"]) for c in costs)
    ok &= check("progress event <= 2 us", worst <= 2.0, f"{worst:.3f} us worst")
    seq = [c["sequential"] for c in costs]
    print(
        "  per-event work is O(1) (a clock read and two stores; no reactor call),\n"
        "  but measured cost rises with the number armed: "
        + " / ".join(f"{c:.3f}" for c in seq)
        + " us at 1k / 10k / 100k (sequential).\n"
        "  That is the memory hierarchy (100k calls with their Deferreds and timers\n"
        "  do not fit in cache); IDelayedCall.reset grows faster, and touches the reactor.\n"
        "  A call's first progress (once per call) may re-arm its timer from the\n"
        "  first-sign allowance to the gap model: that is the 'first progress' cost."
    )
    print(f"\nelapsed {time.perf_counter() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
