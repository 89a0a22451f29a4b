"""
What a diagram shows, decided once for every output format.

Owns: checking that a :class:`MachineSpec` is drawable, and every choice a
reader sees whatever the format -- which states are initial, cleanup or
terminal, what each transition says (``input [guard] / behaviour``), which
are cancellations or timeouts, which child machines a state runs, and the
layout direction.

Loops are drawn inside their state, as UML draws internal transitions: a
loop does not leave its state (its resources stay held), which is exactly
what an internal transition means.  Drawn as arcs, several loops on one
state nest, and Graphviz lets outer arcs and other edges cut through their
labels; inside the state they cannot collide with anything.  fsmcancel's
automatic ``cancel`` loop in cleanup and terminal states is listed there too.

Must not touch: syntax.  DOT and Mermaid differ only in how they spell and
style these decisions (``_dot``, ``_mermaid``); deciding here keeps the
formats from drifting apart the way hand-drawn diagrams drift from code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fsmcancel.core._spec import MachineSpec, StateKind, TransitionSpec

TimeoutLabel = Callable[[str], str]

#: Layout direction, as both Graphviz (``rankdir``) and Mermaid spell it.
Direction = Literal["TB", "BT", "LR", "RL"]
DIRECTIONS: tuple[Direction, ...] = ("TB", "BT", "LR", "RL")

#: Top to bottom.  fsmcancel machines are mostly a forward chain (start,
#: running states, cleanup, terminal) whose edge labels are far wider than
#: tall: laid out left to right every label widens the drawing, giving strips
#: 3.4:1 to 5.9:1 that a README scales down to unreadable text; top to bottom
#: the labels sit beside the edges and only add a line of height per rank.
DEFAULT_DIRECTION: Direction = "TB"

#: Prefixes the timeout rule on a timeout edge (a word, not a symbol such as
#: a stopwatch, which Graphviz's default fonts lack).
TIMEOUT_MARK = "timeout"

#: Names the fallback among guarded transitions, as UML does.
ELSE_GUARD = "else"

#: The label of fsmcancel's automatic ``cancel`` loop: a first cancel in a
#: cleanup or terminal state does nothing (the README's "Cancel" rule).
AUTO_CANCEL_LABEL = "cancel (no-op)"

#: Marks a loop listed inside its state.
LOOP_MARK = "\N{CLOCKWISE OPEN CIRCLE ARROW}"

EdgeKind = Literal["plain", "cancel", "timeout"]


@dataclass(frozen=True)
class EdgeView:
    """
    One transition, as drawn: ``label`` is ``input``, ``input [guard]`` and
    ``/ behaviour`` where the behaviour's name adds something; ``timeout``
    is the rendered timeout rule, if a timeout feeds the input.
    """

    source: str
    target: str
    label: str
    timeout: str | None
    cancel: bool

    @property
    def kind(self) -> EdgeKind:
        """
        How the edge is styled: cancellations win over timeouts, since a
        missing cancel path is what a reader must be able to spot.
        """
        if self.cancel:
            return "cancel"
        return "timeout" if self.timeout is not None else "plain"

    @property
    def lines(self) -> list[str]:
        return [self.label] if self.timeout is None else [self.label, self.timeout]


@dataclass(frozen=True)
class NodeView:
    """
    One state, as drawn: ``loops`` are its transitions back to itself,
    drawn inside it; ``children`` the machines it runs as child operations.
    """

    name: str
    kind: StateKind
    initial: bool
    current: bool
    resources: tuple[str, ...]
    loops: tuple[EdgeView, ...]
    children: tuple[str, ...]


@dataclass(frozen=True)
class DiagramView:
    """
    A checked machine, ready for a format: states and transitions in the
    spec's order, which is what makes the output stable.
    """

    name: str
    nodes: tuple[NodeView, ...]
    edges: tuple[EdgeView, ...]
    direction: Direction
    guards: bool

    def children(self) -> list[str]:
        """
        Every child machine any state runs, once each, in order.
        """
        return list(dict.fromkeys(c for node in self.nodes for c in node.children))


def build_view(
    spec: MachineSpec,
    highlight: str | None,
    timeout_label: TimeoutLabel,
    direction: Direction = DEFAULT_DIRECTION,
) -> DiagramView:
    """
    Check ``spec`` is drawable and decide how each part of it looks.

    An inconsistent spec (an edge to an undeclared state) would otherwise
    make Graphviz invent a bare node silently, which is exactly the kind of
    quiet wrongness generated diagrams are meant to rule out.
    """
    _check(spec, highlight, direction)
    guarded = {(t.source, t.input) for t in spec.transitions if t.guard is not None}
    edges = [_edge(t, timeout_label, (t.source, t.input) in guarded) for t in spec.transitions]
    nodes = tuple(
        NodeView(
            name=state.name,
            kind=state.kind,
            initial=state.name == spec.initial,
            current=state.name == highlight,
            resources=state.resources,
            loops=tuple(e for e in edges if e.source == e.target == state.name),
            children=tuple(dict.fromkeys(state.children)),
        )
        for state in spec.states
    )
    between = tuple(edge for edge in edges if edge.source != edge.target)
    return DiagramView(spec.name, nodes, between, direction, bool(guarded))


def _check(spec: MachineSpec, highlight: str | None, direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown diagram direction {direction!r}; expected one of {DIRECTIONS}")
    names = [state.name for state in spec.states]
    known = set(names)
    if len(known) != len(names):
        raise ValueError(f"machine {spec.name!r} declares a state name twice")
    if spec.initial not in known:
        raise ValueError(f"machine {spec.name!r}: initial state {spec.initial!r} is not declared")
    if highlight is not None and highlight not in known:
        raise ValueError(f"machine {spec.name!r} has no state {highlight!r} to highlight")
    for transition in spec.transitions:
        for end in (transition.source, transition.target):
            if end not in known:
                raise ValueError(
                    f"machine {spec.name!r}: transition {transition.input!r} "
                    f"names undeclared state {end!r}"
                )


def edge_label(transition: TransitionSpec, guarded: bool) -> str:
    """
    ``input``, then ``[guard]`` (``[else]`` for the fallback when the same
    state has guarded transitions on the same input), then ``/ behaviour``
    unless the behaviour is just named after its input.
    """
    label = transition.input
    if transition.guard is not None:
        label += f" [{transition.guard}]"
    elif guarded:
        label += f" [{ELSE_GUARD}]"
    if transition.output is not None and transition.output != transition.input:
        label += f" / {transition.output}"
    return label


def _edge(transition: TransitionSpec, timeout_label: TimeoutLabel, guarded: bool) -> EdgeView:
    timeout = None
    if transition.timeout is not None:
        timeout = f"{TIMEOUT_MARK} {timeout_label(transition.timeout)}"
    label = edge_label(transition, guarded)
    if transition.automatic and transition.is_cancel:
        label = AUTO_CANCEL_LABEL
    return EdgeView(
        source=transition.source,
        target=transition.target,
        label=label,
        timeout=timeout,
        cancel=transition.is_cancel,
    )


def node_lines(node: NodeView) -> list[str]:
    """
    The text lines under a state's name: its kind (so the marking survives
    monochrome printing and screen readers) and the resources it owns.
    """
    lines = []
    if node.kind != "running":
        lines.append(f"({node.kind})")
    if node.resources:
        lines.append("owns: " + ", ".join(node.resources))
    return lines
