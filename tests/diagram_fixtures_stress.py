"""
Machines built to make diagrams hard to lay out: many loops, parallel
edges both ways, long labels and names, guarded transitions on one input,
child machines shared between states -- and a generator of random ones.

They are hand-built specs, because the builder does not yet produce guards
or child machines; ``fsmcancel diagram tests.diagram_fixtures_stress``
draws them.
"""

from __future__ import annotations

import random

from fsmcancel.core._spec import MachineSpec, StateKind, StateSpec, TransitionSpec


def _auto_cancels(*states: str) -> tuple[TransitionSpec, ...]:
    return tuple(TransitionSpec(s, "cancel", s, None, automatic=True) for s in states)


LOOPS = MachineSpec(
    name="many-loops",
    initial="polling",
    states=(
        StateSpec("polling", "running", ("timer", "socket")),
        StateSpec("backing_off", "running", ("retry timer",)),
        StateSpec("done", "terminal"),
    ),
    transitions=(
        TransitionSpec("polling", "tick", "polling", "poll"),
        TransitionSpec("polling", "reply", "polling", "record_reply"),
        TransitionSpec("polling", "reply_late", "polling", "reply_late"),
        TransitionSpec("polling", "stalled", "polling", "poke", timeout="poll"),
        TransitionSpec("polling", "refused", "backing_off", "wait_a_little_while_longer"),
        TransitionSpec("backing_off", "tick", "backing_off", "count_down"),
        TransitionSpec("backing_off", "wake", "polling", "poll"),
        TransitionSpec("backing_off", "give_up", "done", "report_failure", timeout="backoff"),
        TransitionSpec("polling", "finished", "done", "deliver"),
        TransitionSpec("polling", "cancel", "done", "stop_polling"),
        TransitionSpec("backing_off", "cancel", "done", "stop_waiting"),
        *_auto_cancels("done"),
    ),
)

PARALLEL = MachineSpec(
    name="parallel-edges",
    initial="negotiating",
    states=(
        StateSpec("negotiating", "running", ("connection",)),
        StateSpec("transferring_a_very_long_state_name_indeed", "running", ("connection",)),
        StateSpec("closing", "cleanup", ("connection",)),
        StateSpec("closed", "terminal"),
    ),
    transitions=(
        *(
            TransitionSpec(
                "negotiating",
                f"offer_{n}_accepted",
                "transferring_a_very_long_state_name_indeed",
                f"begin_transfer_with_parameters_{n}",
            )
            for n in range(4)
        ),
        *(
            TransitionSpec(
                "transferring_a_very_long_state_name_indeed",
                f"renegotiate_{n}",
                "negotiating",
                None,
                timeout="transfer" if n == 0 else None,
            )
            for n in range(3)
        ),
        TransitionSpec(
            "transferring_a_very_long_state_name_indeed", "complete", "closing", "flush"
        ),
        TransitionSpec("transferring_a_very_long_state_name_indeed", "broken", "closing", "flush"),
        TransitionSpec("negotiating", "rejected", "closed", "fail"),
        TransitionSpec("negotiating", "rejected_permanently", "closed", "fail"),
        TransitionSpec("closing", "closed_cleanly", "closed", None),
        TransitionSpec("closing", "closed_badly", "closed", "note_error"),
        TransitionSpec("negotiating", "cancel", "closing", None),
        TransitionSpec("transferring_a_very_long_state_name_indeed", "cancel", "closing", None),
        *_auto_cancels("closing", "closed"),
    ),
)

GUARDED = MachineSpec(
    name="guarded-share-finder",
    initial="querying",
    states=(
        StateSpec("querying", "running", ("query group",), ("share-query",)),
        StateSpec("fetching", "running", ("fetch group",), ("share-fetch", "share-query")),
        StateSpec("verifying", "running"),
        StateSpec("releasing", "cleanup", ("fetch group",), ("share-fetch",)),
        StateSpec("done", "terminal"),
        StateSpec("failed", "terminal"),
    ),
    transitions=(
        TransitionSpec("querying", "answered", "fetching", "start_fetch", guard="holder_known"),
        TransitionSpec("querying", "answered", "querying", "note_answer", guard="more_to_ask"),
        TransitionSpec("querying", "answered", "failed", "give_up", guard="nobody_left"),
        TransitionSpec("querying", "answered", "querying", "wait"),
        TransitionSpec("querying", "stalled", "querying", "ask_another", timeout="query"),
        TransitionSpec("fetching", "fetched", "verifying", "check_all", guard="all_shares_in"),
        TransitionSpec("fetching", "fetched", "fetching", "store", guard="more_needed"),
        TransitionSpec("fetching", "fetched", "fetching", "store_duplicate"),
        TransitionSpec("fetching", "failed", "fetching", "fail_over", guard="another_holder"),
        TransitionSpec("fetching", "failed", "releasing", "record", guard="k_unreachable"),
        TransitionSpec("fetching", "failed", "querying", "ask_again"),
        TransitionSpec("verifying", "checked", "done", "deliver", guard="digest_matches"),
        TransitionSpec("verifying", "checked", "failed", "mismatch"),
        TransitionSpec("releasing", "released", "failed", None),
        TransitionSpec("querying", "cancel", "failed", "stop_queries"),
        TransitionSpec("fetching", "cancel", "releasing", "stop_fetches"),
        TransitionSpec("verifying", "cancel", "failed", None),
        *_auto_cancels("releasing", "done", "failed"),
    ),
)

#: Names and labels full of what DOT, Mermaid, YAML and HTML treat specially.
AWKWARD = MachineSpec(
    name='we"ird: name; #1 <&>',
    initial='say "hi"',
    states=(
        StateSpec('say "hi"', "running", ("a;b", "c:d"), ("child <&> machine",)),
        StateSpec("default", "running"),
        StateSpec("x-y", "cleanup"),
        StateSpec("x y", "terminal"),
        StateSpec("back\\slash <b>", "terminal"),
        StateSpec("restyle", "running", ("x",)),
    ),
    transitions=(
        TransitionSpec('say "hi"', "go", "default", "a:b;c#d"),
        TransitionSpec('say "hi"', "cancel", "x y"),
        TransitionSpec("default", "cancel", "x-y", "<stop>"),
        TransitionSpec("default", "\\N", "back\\slash <b>", guard="a & b"),
        TransitionSpec("default", "\\N", "default", "%%", guard="#35;"),
        TransitionSpec("x-y", "closed", "x y"),
        TransitionSpec("default", "turn direction LR", "restyle", "100%"),
        TransitionSpec("restyle", "cancel", "x y"),
        *_auto_cancels("x-y", "x y", "back\\slash <b>"),
    ),
)

FIXED = (LOOPS, PARALLEL, GUARDED, AWKWARD)


def random_machine(seed: int) -> MachineSpec:
    """
    A random, well-formed machine: 2 to 8 running states, maybe a cleanup
    state, one or two terminal states, and transitions of every sort --
    loops, parallel edges, guards, timeouts, children, long labels.
    """
    rng = random.Random(seed)

    def word(lo: int = 3, hi: int = 18) -> str:
        return "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(lo, hi))
        )

    running = [f"r{n}_{word(2, 14)}" for n in range(rng.randint(2, 8))]
    cleanup = [f"c_{word(2, 10)}"] if rng.random() < 0.6 else []
    terminal = [f"t{n}_{word(2, 8)}" for n in range(rng.randint(1, 2))]
    kinds: dict[str, StateKind] = {
        **dict.fromkeys(running, "running"),
        **dict.fromkeys(cleanup, "cleanup"),
        **dict.fromkeys(terminal, "terminal"),
    }
    children = [f"child-{word(3, 10)}" for _ in range(rng.randint(0, 3))]
    states = tuple(
        StateSpec(
            name,
            kind,
            tuple(word() for _ in range(rng.randint(0, 2))) if kind != "terminal" else (),
            tuple(rng.sample(children, rng.randint(0, len(children))))
            if kind != "terminal"
            else (),
        )
        for name, kind in kinds.items()
    )
    live = running + cleanup
    transitions: list[TransitionSpec] = []
    for _ in range(rng.randint(len(live), 4 * len(live))):
        source = rng.choice(live)
        target = rng.choice([*live, *terminal])
        inputs = word()
        output = rng.choice([None, inputs, word(3, 30)])
        timeout = rng.choice([None, None, None, word(3, 8)])
        if rng.random() < 0.3:
            # A guarded fan-out on one input, sometimes with a fallback.
            for _ in range(rng.randint(2, 4)):
                transitions.append(
                    TransitionSpec(
                        source, inputs, rng.choice([*live, *terminal]), output, guard=word()
                    )
                )
            if rng.random() < 0.5:
                transitions.append(TransitionSpec(source, inputs, target, output))
        else:
            transitions.append(TransitionSpec(source, inputs, target, output, timeout=timeout))
    for name in running:
        transitions.append(TransitionSpec(name, "cancel", rng.choice(cleanup or terminal), None))
    transitions += _auto_cancels(*cleanup, *terminal)
    return MachineSpec(f"random-{seed}", running[0], states, tuple(transitions))
