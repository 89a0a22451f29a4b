"""
What a diagram shows, decided once for every output format.

DOT and Mermaid differ only in syntax and in what they can style, so the
choices that matter to a reader -- which states are initial, cleanup or
terminal, what an edge is labelled, which edges are cancellations, what a
timeout edge says -- are made here.  That keeps the formats from drifting
apart the way hand-drawn diagrams drift from code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fsmcancel._spec import MachineSpec, StateKind, TransitionSpec

TimeoutLabel = Callable[[str], str]

#: Prefixes the timeout rule on a timeout edge (a word, not a symbol such as
#: a stopwatch, which Graphviz's default fonts lack).
TIMEOUT_MARK = "timeout"


@dataclass(frozen=True)
class NodeView:
    """
    One state, as drawn.

    ``auto_cancel`` says fsmcancel added a no-op ``cancel`` loop here, which
    formats that cannot style edges note on the state instead of drawing.
    """

    name: str
    kind: StateKind
    initial: bool
    current: bool
    resources: tuple[str, ...]
    auto_cancel: bool


@dataclass(frozen=True)
class EdgeView:
    """
    One transition, as drawn: ``label`` is ``input`` or ``input / output``;
    ``timeout`` is the rendered timeout rule, if a timeout feeds the input.
    """

    source: str
    target: str
    label: str
    timeout: str | None
    cancel: bool
    automatic: bool

    @property
    def compact(self) -> bool:
        """
        Whether this is an automatic cancel self-loop, which may be noted on
        the state rather than drawn.
        """
        return self.automatic and self.cancel and self.source == self.target


@dataclass(frozen=True)
class DiagramView:
    """
    A checked machine, ready for a format: states and transitions in the
    spec's order, which is what makes the output stable.
    """

    name: str
    nodes: tuple[NodeView, ...]
    edges: tuple[EdgeView, ...]


def build_view(
    spec: MachineSpec, highlight: str | None, timeout_label: TimeoutLabel
) -> DiagramView:
    """
    Check ``spec`` is drawable and decide how each part of it looks.

    An inconsistent spec (an edge to an undeclared state) would otherwise
    make Graphviz invent a bare node silently, which is exactly the kind of
    quiet wrongness generated diagrams are meant to rule out.
    """
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
    edges = tuple(_edge(transition, timeout_label) for transition in spec.transitions)
    compacted = {edge.source for edge in edges if edge.compact}
    nodes = tuple(
        NodeView(
            name=state.name,
            kind=state.kind,
            initial=state.name == spec.initial,
            current=state.name == highlight,
            resources=state.resources,
            auto_cancel=state.name in compacted,
        )
        for state in spec.states
    )
    return DiagramView(spec.name, nodes, edges)


def _edge(transition: TransitionSpec, timeout_label: TimeoutLabel) -> EdgeView:
    label = transition.input
    if transition.output is not None:
        label = f"{label} / {transition.output}"
    timeout = None
    if transition.timeout is not None:
        timeout = f"{TIMEOUT_MARK} {timeout_label(transition.timeout)}"
    return EdgeView(
        source=transition.source,
        target=transition.target,
        label=label,
        timeout=timeout,
        cancel=transition.is_cancel,
        automatic=transition.automatic,
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
