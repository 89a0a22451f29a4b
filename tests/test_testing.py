"""
``fsmcancel.testing``: the cancel-in-every-state cases, run on this
project's own machines, and shown to catch a machine that breaks a promise.
"""

from __future__ import annotations

from typing import Any, Protocol

import pytest
from twisted.python.failure import Failure

from fsmcancel import (
    Cancellable,
    DefinitionError,
    Operation,
    OperationBuilder,
    OperationCancelled,
)
from fsmcancel.testing import CancelCase, cancel_cases, fire_pending, shortest_paths
from tests.test_core import Core, download_factory


def feed(op: Operation[Any, Any], name: str) -> None:
    if name == "chunk":
        op.inputs.chunk("data")
    else:
        getattr(op.inputs, name)()


# "closing" is entered and left while one input runs: nothing can cancel there.
CASES = cancel_cases(download_factory(), exclude=["closing"])


def test_cases_cover_every_non_terminal_state() -> None:
    factory = download_factory()
    cases = cancel_cases(factory)
    assert [c.state for c in cases] == ["idle", "receiving", "closing"]
    assert [t.input for t in cases[2].path] == ["start", "finished"]
    assert str(cases[1]) == "download:receiving"
    assert [c.state for c in CASES] == ["idle", "receiving"]


def test_a_state_only_passed_through_is_reported() -> None:
    closing = cancel_cases(download_factory())[2]
    with pytest.raises(AssertionError, match=r"left the operation in 'done'.*exclude it"):
        closing.check(Core, feed=feed)
    with pytest.raises(ValueError, match="no such state"):
        cancel_cases(download_factory(), exclude=["nowhere"])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_cancel_anywhere_in_download(case: CancelCase) -> None:
    outcome = case.check(Core, feed=feed)
    assert isinstance(outcome, Failure) and isinstance(outcome.value, OperationCancelled)
    assert outcome.value.state == case.state


@pytest.mark.parametrize("case", CASES, ids=str)
def test_cancel_anywhere_with_slow_cleanup(case: CancelCase) -> None:
    case.check(lambda: Core(slow_close=True), feed=feed, settle=fire_pending)
    case.check(lambda: Core(slow_close=True), feed=feed)  # forced instead


class Leaky(Cancellable, Protocol):
    def go(self) -> None: ...


def leaky_factory() -> Any:
    """
    A machine whose cancel transition leaves a timer behind: the helper must
    notice.
    """
    b = OperationBuilder(Leaky, object, name="leaky")
    a = b.state("a")
    end = b.terminal_state("end")

    @a.upon(Leaky.cancel).to(end)
    def cancel(inputs: Leaky, op: Operation[Leaky, object], reason: str | None = None) -> None:
        op.clock.callLater(5, lambda: None)  # not owned: never released

    a.upon(Leaky.go).loop().returns(None)
    return b.build()


def test_a_leak_is_reported_with_state_and_path() -> None:
    [case] = cancel_cases(leaky_factory())
    with pytest.raises(AssertionError, match=r"leaky:a \(reached by a\): timers left armed"):
        case.check(object)


def test_paths_skip_cancel_and_unreachable_without_cancel() -> None:
    spec = download_factory().spec
    paths = shortest_paths(spec)
    assert set(paths) == {"idle", "receiving", "closing", "done"}
    assert all(not t.is_cancel for path in paths.values() for t in path)


class Db(Cancellable, Protocol):
    def open(self) -> None: ...


def mislabelled_factory() -> Any:
    """
    A state that declares "a database handle" but owns a socket and a timer.
    """
    b = OperationBuilder(Db, object, name="mislabelled")
    idle = b.state("idle")
    working = b.state("working", resources=["database handle"])
    end = b.terminal_state("end")

    @idle.upon(Db.open).to(working)
    def open_(inputs: Db, op: Operation[Db, object]) -> None:
        op.own(object(), lambda _: None, name="socket")
        op.call_later(5, lambda: None)

    (idle | working).upon(Db.cancel).to(end).returns(None)
    return b.build()


def test_undeclared_resources_are_reported() -> None:
    case = next(c for c in cancel_cases(mislabelled_factory()) if c.state == "working")
    with pytest.raises(
        AssertionError,
        match=r"mislabelled:working .*acquired without declaring it .*"
        r"'socket' in 'working', 'DelayedCall' in 'working'",
    ):
        case.check(object)
    case.check(object, check_resources=False)  # everything else holds


def test_undeclared_resources_are_a_debug_warning() -> None:
    import logging

    import structlog
    from structlog.testing import capture_logs
    from twisted.internet.task import Clock

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    with capture_logs() as logs:
        op = mislabelled_factory()(object(), clock=Clock())
        op.inputs.open()
    warnings = [e for e in logs if e["event"] == "undeclared resource"]
    assert [(e["state"], e["resource"], e["declared"]) for e in warnings] == [
        ("working", "socket", ["database handle"]),
        ("working", "DelayedCall", ["database handle"]),
    ]
    assert op.undeclared_resources == (("working", "socket"), ("working", "DelayedCall"))
    op.completion.addErrback(lambda f: None)
    op.cancel()


def test_an_async_data_factory_is_refused() -> None:
    b = OperationBuilder(Db, object, name="asyncy")
    b.state("idle")

    async def load(inputs: Db, op: Operation[Db, object]) -> int:
        return 1

    with pytest.raises(DefinitionError, match=r"asyncy: data factory of state 'w' .* is async def"):
        b.state("w", load)


def test_a_per_peer_resource_is_declared_by_what_it_is() -> None:
    b = OperationBuilder(Db, object, name="per-peer")
    idle = b.state("idle")
    working = b.state("working", resources=["query call"])
    end = b.terminal_state("end")

    @idle.upon(Db.open).to(working)
    def open_(inputs: Db, op: Operation[Db, object]) -> None:
        op.own(object(), lambda _: None, name="query call to server-3")  # as timeouts.call does
        op.own(object(), lambda _: None, name="query caller")  # not the same thing

    (idle | working).upon(Db.cancel).to(end).returns(None)
    case = next(c for c in cancel_cases(b.build()) if c.state == "working")
    with pytest.raises(AssertionError, match=r"'query caller' in 'working'$"):
        case.check(object)
