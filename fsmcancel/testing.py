"""
Test helpers for your own machines.

``cancel_cases(factory)`` derives, from the machine's own transition table,
one test case per state that is not terminal: the shortest sequence of inputs
that reaches it from the initial state.  Each case drives a fresh operation
there under a ``task.Clock``, cancels it, and checks fsmcancel's promises:

- the completion fires exactly once;
- by then the operation holds nothing and no timer is left on the clock;
- a cleanup that waits on something is not cut short by a repeated cancel,
  and is forced by ``op.force()``;
- every resource a state acquired on the way is one it declares
  (``resources=`` or ``children=``), so its diagram tells the truth
  (``check_resources=False`` to skip this).

``check`` returns what the completion fired with, so a test can also assert
the outcome (usually ``OperationCancelled``; a cancel transition may choose
another, as a Twisted canceller may).

Typical use with pytest::

    from fsmcancel.testing import cancel_cases

    @pytest.mark.parametrize("case", cancel_cases(download_machine), ids=str)
    def test_cancel_anywhere(case):
        case.check(lambda: Core(...), feed=feed)

``feed(op, input_name)`` feeds one input with whatever arguments it needs
(the default calls it with none).  If cleanup waits on something the test
must complete, pass ``settle(op)``; otherwise ``op.force()`` forces it, which
is also checked.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.base import DelayedCall
from twisted.internet.task import Clock

from fsmcancel.core._factory import OperationFactory
from fsmcancel.core._operation import Operation
from fsmcancel.core._spec import MachineSpec, TransitionSpec

Feed = Callable[[Operation[Any, Any], str], None]


def shortest_paths(spec: MachineSpec) -> dict[str, tuple[TransitionSpec, ...]]:
    """
    For every state reachable without ``cancel``, the shortest input path
    from the initial state (breadth first, in definition order, so the
    result is stable).
    """
    paths: dict[str, tuple[TransitionSpec, ...]] = {spec.initial: ()}
    todo = deque([spec.initial])
    while todo:
        here = todo.popleft()
        for t in spec.transitions:
            if t.source == here and not t.is_cancel and t.target not in paths:
                paths[t.target] = (*paths[here], t)
                todo.append(t.target)
    return paths


@dataclass(frozen=True)
class CancelCase:
    """
    Cancel an operation of ``factory`` once it has reached ``state``.
    """

    factory: OperationFactory[Any, Any]
    state: str
    path: tuple[TransitionSpec, ...]

    def __str__(self) -> str:
        return f"{self.factory.name}:{self.state}"

    def check(
        self,
        core: Callable[[], object],
        *,
        feed: Feed | None = None,
        settle: Callable[[Operation[Any, Any]], object] | None = None,
        check_resources: bool = True,
    ) -> object:
        """
        Run the case; raise ``AssertionError`` naming the state and path on
        any broken promise.  Returns what the completion fired with (a
        ``Failure`` is returned, not raised, and counts as handled).
        """
        clock = Clock()
        op = self.factory(core(), clock=clock)
        op._trace = op._trace or check_resources  # checks declarations as it goes
        fired: list[object] = []
        op.completion.addBoth(_record, fired)
        feed = feed or _feed_no_arguments
        for t in self.path:
            feed(op, t.input)
        route = " -> ".join([self.factory.spec.initial, *(t.target for t in self.path)])
        if op.state != self.state:
            raise AssertionError(
                f"{self}: driving {route} left the operation in {op.state!r}"
                + (" (it completed early)" if op.done else "")
                + "; if the machine only passes through this state, exclude it"
            )
        op.cancel(f"cancel_cases: cancel in {self.state}")
        where = f"{self} (reached by {route})"
        if not op.done and settle is not None:
            settle(op)
        if not op.done:
            op.cancel("cancel_cases: a repeated cancel")
            op.completion.cancel()
            if op.done or fired:
                raise AssertionError(f"{where}: a repeated cancel forced the cleanup")
            op.force("cancel_cases: force")
        if len(fired) != 1:
            raise AssertionError(f"{where}: completion fired {len(fired)} times, expected once")
        if op.resources:
            raise AssertionError(f"{where}: still holds {list(op.resources)} after completion")
        leftover = [c for c in clock.getDelayedCalls() if cast(DelayedCall, c).active()]
        if leftover:
            raise AssertionError(f"{where}: timers left armed: {leftover}")
        if check_resources and op.undeclared_resources:
            found = ", ".join(f"{r!r} in {s!r}" for s, r in dict.fromkeys(op.undeclared_resources))
            raise AssertionError(
                f"{where}: acquired without declaring it (resources=/children=): {found}"
            )
        return fired[0]


def _record(result: object, fired: list[object]) -> None:
    fired.append(result)


def _feed_no_arguments(op: Operation[Any, Any], name: str) -> None:
    getattr(op.inputs, name)()


def cancel_cases(
    factory: OperationFactory[Any, Any], *, exclude: Iterable[str] = ()
) -> list[CancelCase]:
    """
    One ``CancelCase`` per non-terminal state reachable from the initial
    state, in definition order.

    ``exclude`` names states the operation only passes through (entered and
    left while one input runs): nothing can cancel there, and ``check``
    reports that the operation moved on.
    """
    paths = shortest_paths(factory.spec)
    skip = set(exclude)
    unknown = skip - {s.name for s in factory.spec.states}
    if unknown:
        raise ValueError(f"{factory.name}: exclude names no such state: {sorted(unknown)}")
    return [
        CancelCase(factory, s.name, paths[s.name])
        for s in factory.spec.states
        if s.kind != "terminal" and s.name in paths and s.name not in skip
    ]


def fire_pending(op: Operation[Any, Any]) -> None:
    """
    A ``settle`` for ``CancelCase.check``: fire every Deferred the operation
    is waiting on for cleanup, as if each release finished.
    """
    for d, _ in list(op._pending or ()):
        if not d.called:
            d.callback(None)


__all__ = ["CancelCase", "cancel_cases", "fire_pending", "shortest_paths"]
