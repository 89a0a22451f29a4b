"""
Property tests: random interleavings against the rules in the README and
the docstrings of ``fsmcancel/core/``.

``TransferMachine`` drives one ``TRANSFER`` operation (see ``machines.py``)
with random inputs (valid and invalid, re-entrant ones included), watched
Deferreds firing or failing, asynchronous releases settling or failing,
injected release failures, the clock advancing, cancel through each of its
three paths at any moment (twice, during asynchronous cleanup, after
completion), observers coming and going, and a completion callback that
pauses the completion on an inner Deferred.

``NestedMachine`` drives three nested ``LAYER`` operations (the reliability
torture): cancel at any level at any moment, asynchronous cleanups and
injected release failures at every level.

Both check, from inside the completion callback itself, that everything was
released and no timer is left; that the completion fires exactly once; that
its outcome is the one the behaviours and the cancel rules call for; that
every cleanup error reaches it (and is logged); and, per example, that no
"Unhandled error in Deferred" was logged once garbage is collected.

The ``test_bug_*`` tests are minimal reproductions of behaviour these
machines once found to contradict the spec (a forced parent abandoning its
child, a released child's outcome counted as a cleanup error, grandchild
cleanup errors dropped); they stay as regression tests.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from structlog.testing import capture_logs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure

from fsmcancel import (
    CleanupFailed,
    Operation,
    OperationCancelled,
    OperationIncomplete,
    UnexpectedInput,
)
from tests.machines import (
    RELEASE_MODES,
    TRANSFER,
    TRANSFER_INPUTS,
    Custom,
    InjectedError,
    LayerCore,
    LOp,
    TOp,
    Tracker,
    TransferCore,
    Watched,
    start_layer,
)

SETTINGS = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

CANCEL_PATHS = ("completion", "op", "inputs")
REASONS = (None, "user", "shutdown")


# ---------------------------------------------------------------------------
# helpers


def cancel_via(op: Operation[Any, Any], path: str, reason: str | None) -> None:
    """
    One cancel request, by one of the three equivalent paths.
    """
    if path == "completion":
        op.completion.cancel()
    elif path == "op":
        op.cancel(reason)
    else:
        op.inputs.cancel(reason)


def path_reason(path: str, reason: str | None) -> str | None:
    # Cancelling the completion Deferred carries no reason.
    return None if path == "completion" else reason


def leaf_errors(failure: Failure) -> list[BaseException]:
    """
    The individual cleanup errors in one entry of ``errors``/``cleanup_errors``.
    """
    value = failure.value
    assert value is not None
    if isinstance(value, CleanupFailed):
        return [e for f in value.errors for e in leaf_errors(f)]
    if isinstance(value, OperationCancelled) and value.cleanup_errors:
        return [e for f in value.cleanup_errors for e in leaf_errors(f)]
    return [value]


def errors_reaching(result: object) -> list[BaseException]:
    """
    Every cleanup error a completion carries, at any depth: in
    ``CleanupFailed.errors``, ``OperationCancelled.cleanup_errors``, and
    inside a failed outcome (a child's failure that became ours).
    """
    if not isinstance(result, Failure):
        return []
    value = result.value
    if isinstance(value, CleanupFailed):
        found = [e for f in value.errors for e in leaf_errors(f)]
        return found + errors_reaching(value.outcome)
    if isinstance(value, OperationCancelled):
        return [e for f in value.cleanup_errors for e in leaf_errors(f)]
    return []


def same_exceptions(found: list[BaseException], expected: list[BaseException]) -> bool:
    """
    Equal as multisets of exception *objects* (identity, not equality).
    """
    return sorted(map(id, found)) == sorted(map(id, expected))


class UnhandledWatch:
    """
    Collects what Twisted logs about unhandled failures (a Deferred garbage
    collected while holding one) and structlog's fsmcancel events.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(cast(ILogObserver, self._observe))
        self._capture = capture_logs()
        self.logs: list[MutableMapping[str, Any]] = self._capture.__enter__()

    def _observe(self, event: dict[str, Any]) -> None:
        if "log_failure" in event or "Unhandled" in str(event.get("log_format", "")):
            self.events.append(event)

    def cleanup_error_events(self) -> list[MutableMapping[str, Any]]:
        return [e for e in self.logs if e.get("event") == "cleanup error"]

    def close(self) -> list[dict[str, Any]]:
        """
        Collect garbage, stop watching, and return what was seen.
        """
        try:
            gc.collect()
        finally:
            globalLogPublisher.removeObserver(cast(ILogObserver, self._observe))
            self._capture.__exit__(None, None, None)
        return self.events


def describe_unhandled(events: list[dict[str, Any]]) -> str:
    return "; ".join(str(e.get("log_failure", e.get("log_format"))) for e in events)


@pytest.fixture(autouse=True)
def frozen_heap() -> Iterator[None]:
    """
    Each example ends with a full ``gc.collect()``; freezing what exists
    before the test makes that collection look at this test's objects only
    (about 50x faster), so every example can be checked on its own.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# ---------------------------------------------------------------------------
# one operation, random interleavings


class TransferMachine(RuleBasedStateMachine):
    """
    The model: what the behaviours recorded (``Tracker.outcome``), the cancel
    requests made while the operation was not done, and whether the
    operation is finishing.  Everything else is observed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.watch = UnhandledWatch()
        self.clock = Clock()
        self.tracker = Tracker()
        self.op: TOp | None = None
        self.results: list[object] = []
        self.callback_errors: list[AssertionError] = []
        self.after_inner: list[object] = []
        self.inner: Deferred[str] | None = None
        self.observers: list[tuple[Deferred[Any], list[object], list[bool]]] = []
        self.cancel_requests = 0
        self.cancel_state: str | None = None
        self.cancel_reason: str | None = None
        self.forced = False

    # -- setup and completion callbacks --------------------------------

    @initialize(
        modes=st.lists(st.sampled_from(RELEASE_MODES), min_size=1, max_size=6),
        pause=st.booleans(),
        grace=st.sampled_from([None, 4.0, 15.0]),
    )
    def create(self, modes: list[str], pause: bool, grace: float | None) -> None:
        self.tracker = Tracker(modes=modes)
        self.op = TRANSFER(TransferCore(self.tracker), clock=self.clock, grace=grace)
        if pause:
            self.inner = Deferred()
        self.op.completion.addBoth(self._on_completion).addBoth(self._after_inner)

    @property
    def o(self) -> TOp:
        assert self.op is not None
        return self.op

    def _on_completion(self, result: object) -> object:
        # Runs inside the completion: the moment "after cleanup" is promised.
        # An assertion failing in a callback would only fail the Deferred, so
        # it is kept and re-raised by an invariant.
        self.results.append(result)
        try:
            self._check_at_completion()
        except AssertionError as e:
            self.callback_errors.append(e)
        return self.inner  # None, or pause the completion (the wrinkle)

    def _check_at_completion(self) -> None:
        self.sync_grace()
        assert self.o.done
        assert self.tracker.unreleased() == [], self.tracker.unreleased()
        assert self.clock.getDelayedCalls() == [], self.clock.getDelayedCalls()
        abandoned = [c.name for c in self.tracker.customs if c.abandoned]
        if not self.forced:
            assert abandoned == [], f"releases abandoned without a forcing cancel: {abandoned}"

    def _after_inner(self, result: object) -> None:
        self.after_inner.append(result)

    def _observer_result(self, seen: list[object]) -> Callable[[object], None]:
        def record(result: object) -> None:
            seen.append(result)

        return record

    # -- model ---------------------------------------------------------

    def kind(self) -> str:
        return {s.name: s.kind for s in self.o.spec.states}[self.o.state]

    def finishing(self) -> bool:
        """
        Reached a terminal state, failed, or completed: inputs are refused.
        """
        return self.o.done or self.kind() == "terminal" or self.tracker.aborted

    def accepts(self, name: str) -> bool:
        op = self.o
        if self.finishing():
            return False
        return any(
            t.source == op.state and t.input == name and not t.automatic
            for t in op.spec.transitions
        )

    def note_cancel(self, state: str, reason: str | None) -> None:
        """
        A cancel request is about to reach a not-yet-done operation.  Only
        the first can do anything: it is recognised in a running state that
        is not finishing.  Later ones are idempotent.
        """
        self.cancel_requests += 1
        if self.cancel_requests == 1 and not self.finishing() and self.kind() == "running":
            self.cancel_state, self.cancel_reason = state, reason

    def note_force(self, state: str, reason: str | None) -> None:
        """
        The operation is about to be forced, in ``state``.
        """
        self.forced = True
        if self.cancel_state is None:
            self.cancel_state, self.cancel_reason = state, reason

    def sync_grace(self) -> None:
        """
        The cleanup grace may have forced the operation while the clock ran.
        """
        if self.forced:
            return
        for event in self.watch.logs:
            if event.get("event") == "cleanup grace expired":
                grace = event["grace"]
                self.note_force(event["state"], f"cleanup grace of {grace:g}s expired")

    # -- rules ---------------------------------------------------------

    @rule(name=st.sampled_from(sorted(TRANSFER_INPUTS)))
    def feed(self, name: str) -> None:
        op = self.o
        accepted = self.accepts(name)
        state, done = op.state, op.done
        if accepted and name == "reenter_cancel":
            self.note_cancel(state, "from inside")
        try:
            TRANSFER_INPUTS[name](op.inputs)
        except UnexpectedInput as e:
            assert not accepted, f"{name} refused in {state}: {e}"
            assert (op.state, op.done) == (state, done), "a refused input changed something"
            assert e.state == state and e.input == name
        else:
            assert accepted, f"{name} accepted in {state} (done={done})"

    @precondition(lambda self: self.op is not None and self.tracker.live_watched())
    @rule(data=st.data(), ok=st.booleans())
    def fire_watched(self, data: st.DataObject, ok: bool) -> None:
        w: Watched = data.draw(st.sampled_from(self.tracker.live_watched()))
        if ok:
            w.deferred.callback(f"<{w.name}>")
            return
        error = InjectedError(f"{w.name} failed")
        if w.name.startswith("chunk"):
            # Watched without on_failure: the failure fails the operation.
            self.tracker.record("fail", error)
            self.tracker.aborted = True
        w.deferred.errback(Failure(error))

    @precondition(lambda self: self.op is not None and self.tracker.pending_releases())
    @rule(data=st.data(), ok=st.booleans())
    def settle_release(self, data: st.DataObject, ok: bool) -> None:
        c: Custom = data.draw(st.sampled_from(self.tracker.pending_releases()))
        self.tracker.settle(c, ok)

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 5.0, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sync_grace()

    @rule(path=st.sampled_from(CANCEL_PATHS), reason=st.sampled_from(REASONS))
    def cancel(self, path: str, reason: str | None) -> None:
        op = self.o
        reason = path_reason(path, reason)
        if op.done:
            self._cancel_after_completion(path, reason)
            return
        repeated = self.cancel_requests > 0
        before = (op.state, op.done, len(self.results), op.resources)
        self.note_cancel(op.state, reason)
        cancel_via(op, path, reason)  # never raises
        if repeated:
            # Defensive cancels stay polite: nothing changes.
            assert (op.state, op.done, len(self.results), op.resources) == before

    @rule(path=st.sampled_from(CANCEL_PATHS), reason=st.sampled_from(REASONS))
    def force(self, path: str, reason: str | None) -> None:
        op = self.o
        reason = path_reason(path, reason)
        if op.done:
            results = list(self.results)
            op.force(reason)
            assert self.results == results
            return
        if self.cancel_requests == 0:
            # What force() itself starts with: a polite cancel.
            self.note_cancel(op.state, reason)
            cancel_via(op, path, reason)
        if not op.done:
            self.note_force(op.state, reason)
            op.force(reason)
        assert op.done and len(self.results) == 1

    def _cancel_after_completion(self, path: str, reason: str | None) -> None:
        op = self.o
        results, state = list(self.results), op.state
        inner_waiting = self.inner is not None and not self.inner.called
        cancel_via(op, path, reason)
        assert self.results == results and op.state == state
        if path == "completion" and inner_waiting:
            # The completion is paused on the user's inner Deferred: Twisted
            # forwards the cancel there.
            assert self.inner is not None and self.inner.called
            assert len(self.after_inner) == 1
            last = self.after_inner[0]
            assert isinstance(last, Failure) and last.check(CancelledError)
            assert not isinstance(last.value, OperationCancelled)
        elif self.inner is not None:
            assert self.inner.called == (len(self.after_inner) == 1)

    @precondition(lambda self: self.inner is not None and not self.inner.called and self.results)
    @rule()
    def fire_inner(self) -> None:
        assert self.inner is not None
        self.inner.callback("inner")
        assert self.after_inner == ["inner"]

    @rule()
    def observe(self) -> None:
        seen: list[object] = []
        cancelled: list[bool] = []
        d = self.o.observe()
        d.addBoth(self._observer_result(seen))
        self.observers.append((d, seen, cancelled))
        assert len(seen) == (1 if self.o.done else 0)

    @rule()
    def observe_and_cancel_on_delivery(self) -> None:
        """
        An observer whose callback cancels the completion: it must not change
        what the completion (or any other observer) delivers.
        """
        seen: list[object] = []
        op = self.o

        def on_delivery(result: object) -> None:
            seen.append(result)
            if op.done:  # the outcome, not this observer being detached
                op.completion.cancel()

        d = op.observe()
        d.addBoth(on_delivery)
        self.observers.append((d, seen, []))

    @precondition(lambda self: any(not seen for _, seen, _ in self.observers))
    @rule(data=st.data())
    def cancel_observer(self, data: st.DataObject) -> None:
        waiting = [entry for entry in self.observers if not entry[1]]
        d, seen, cancelled = data.draw(st.sampled_from(waiting))
        state, requests = self.o.state, self.o.describe()["cancel_requested"]
        d.cancel()
        cancelled.append(True)
        assert len(seen) == 1
        result = seen[0]
        assert isinstance(result, Failure) and result.check(CancelledError)
        # Only that observer stopped waiting.
        assert (self.o.state, self.o.done) == (state, False)
        assert self.o.describe()["cancel_requested"] == requests

    # -- invariants ----------------------------------------------------

    @invariant()
    def checks_inside_callbacks_passed(self) -> None:
        if self.callback_errors:
            raise self.callback_errors[0]

    @invariant()
    def completion_fires_once_and_only_when_done(self) -> None:
        if self.op is None:
            return
        assert len(self.results) == (1 if self.op.done else 0)
        for _, seen, cancelled in self.observers:
            assert len(seen) <= 1
            if not cancelled:
                assert len(seen) == (1 if self.op.done else 0)

    @invariant()
    def no_timer_outlives_completion(self) -> None:
        if self.op is not None and self.op.done:
            assert self.clock.getDelayedCalls() == []

    # -- teardown: finish, then judge the outcome ----------------------

    def teardown(self) -> None:
        try:
            if self.op is not None:
                self._finish_and_judge()
        finally:
            self.op = None
            self.observers = []
            self.inner = None
            self.results = []
            self.after_inner = []
            self.tracker = Tracker()
            events = self.watch.close()
        assert not events, "unhandled errors: " + describe_unhandled(events)

    def _finish_and_judge(self) -> None:
        op = self.o
        self.sync_grace()
        if not op.done:
            self.note_cancel(op.state, "teardown")
            op.cancel("teardown")
        if not op.done:
            self.note_force(op.state, "teardown: force")
            op.force("teardown: force")
        assert op.done and len(self.results) == 1
        self.checks_inside_callbacks_passed()
        result = self.results[0]
        self._judge(result)
        # Every observer that was not cancelled saw the very same outcome.
        for _, seen, cancelled in self.observers:
            if not cancelled:
                assert len(seen) == 1
                if isinstance(result, Failure):
                    assert isinstance(seen[0], Failure) and seen[0].value is result.value
                else:
                    assert seen[0] == result
        # Every cleanup error was logged, once.
        logged = sorted(e["error"] for e in self.watch.cleanup_error_events())
        assert logged == sorted(repr(e) for e in self.tracker.raised)
        # Cancels after completion change nothing and raise nothing.
        for path in CANCEL_PATHS:
            cancel_via(op, path, "late")
        assert self.results == [result]

    def _judge(self, result: object) -> None:
        raised = self.tracker.raised
        outcome = self.tracker.outcome
        if outcome is None and self.cancel_state is not None:
            assert isinstance(result, Failure), result
            value = result.value
            assert isinstance(value, OperationCancelled), result
            assert value.state == self.cancel_state
            assert value.reason == self.cancel_reason
            assert value.forced == self.forced
            assert same_exceptions(errors_reaching(result), raised), (result, raised)
            return
        if raised:
            assert isinstance(result, Failure) and isinstance(result.value, CleanupFailed), result
            assert same_exceptions(
                [e for f in result.value.errors for e in leaf_errors(f)], raised
            ), (result, raised)
            result = result.value.outcome
        if outcome is None:
            assert isinstance(result, Failure) and result.check(OperationIncomplete), result
        elif outcome[0] == "ok":
            assert result == outcome[1]
        elif outcome[1] == "UnexpectedInput":
            assert isinstance(result, Failure) and result.check(UnexpectedInput), result
        else:
            assert isinstance(result, Failure) and result.value is outcome[1], (result, outcome)


TransferMachine.TestCase.settings = SETTINGS
TestTransferProperties = TransferMachine.TestCase


# ---------------------------------------------------------------------------
# three nested operations: the torture


class NestedMachine(RuleBasedStateMachine):
    """
    ``ops[2]`` is the outer operation, ``ops[0]`` the innermost.

    ``FORCE = False``: the rules cancel only the outer operation, once (at
    any moment: idle, running, during its own or its children's cleanup),
    with no cleanup grace; teardown then finishes everything by settling
    what is pending and advancing the clock, so completion must come
    without any forcing.  ``FORCE = True`` also cancels and forces any
    level, any number of times, with a cleanup grace that may force too.

    ``STRICT = True`` checks the issue's "every cleanup error reaches the
    outer completion" literally; ``STRICT = False`` checks that each level's
    cleanup errors reach that level's own completion, and that nothing but
    cleanup errors (and the children's own failures, see the BUG tests)
    reaches the outer one.
    """

    FORCE = False
    STRICT = False
    GRACE: float | None = None

    def __init__(self) -> None:
        super().__init__()
        self.watch = UnhandledWatch()
        self.clock = Clock()
        self.trackers: list[Tracker] = []
        self.ops: dict[int, LOp] = {}
        self.top: LOp | None = None
        self.results: list[object] = []
        self.callback_errors: list[AssertionError] = []
        self.requests: dict[int, int] = {}

    @initialize(
        modes=st.lists(
            st.lists(st.sampled_from(RELEASE_MODES), min_size=1, max_size=4),
            min_size=3,
            max_size=3,
        ),
        start=st.booleans(),
    )
    def create(self, modes: list[list[str]], start: bool) -> None:
        self.trackers = [Tracker(modes=m) for m in modes]
        self.top = start_layer(2, self.clock, self.trackers, self.ops, self.GRACE)
        self.top.completion.addBoth(self._on_completion)
        if start:
            self.top.inputs.start()

    @property
    def t(self) -> LOp:
        assert self.top is not None
        return self.top

    def _on_completion(self, result: object) -> None:
        self.results.append(result)
        try:
            self._check_at_completion()
        except AssertionError as e:
            self.callback_errors.append(e)

    def _check_at_completion(self) -> None:
        # Everything, down to the innermost level, was released first.
        for depth, tracker in enumerate(self.trackers):
            assert tracker.unreleased() == [], (depth, tracker.unreleased())
        for depth, op in self.ops.items():
            assert op.done, f"level {depth} still running in {op.state!r}"
        assert self.clock.getDelayedCalls() == [], self.clock.getDelayedCalls()

    @precondition(lambda self: self.top is not None and self.top.state == "idle")
    @rule()
    def start(self) -> None:
        self.t.inputs.start()

    @rule(
        data=st.data(),
        path=st.sampled_from(CANCEL_PATHS),
        reason=st.sampled_from(REASONS),
    )
    def cancel(self, data: st.DataObject, path: str, reason: str | None) -> None:
        if self.FORCE:
            depth = data.draw(st.sampled_from(sorted(self.ops)))
        elif self.requests.get(2, 0) == 0 or self.t.done:
            depth = 2
        else:
            return
        op = self.ops[depth]
        first = self.requests.get(depth, 0) == 0
        self.requests[depth] = self.requests.get(depth, 0) + 1
        before = (op.state, op.done, op.resources)
        cancel_via(op, path, reason)
        if not first:
            assert (op.state, op.done, op.resources) == before, "a repeated cancel changed it"

    @precondition(lambda self: self.FORCE)
    @rule(data=st.data(), reason=st.sampled_from(REASONS))
    def force(self, data: st.DataObject, reason: str | None) -> None:
        depth = data.draw(st.sampled_from(sorted(self.ops)))
        op = self.ops[depth]
        op.force(reason)
        assert op.done and op.resources == ()

    @precondition(lambda self: any(t.live_watched() for t in self.trackers))
    @rule(data=st.data(), ok=st.booleans())
    def fire_watched(self, data: st.DataObject, ok: bool) -> None:
        live = [w for t in self.trackers for w in t.live_watched()]
        w = data.draw(st.sampled_from(live))
        if ok:
            w.deferred.callback(f"<{w.name}>")
        else:
            w.deferred.errback(Failure(InjectedError(f"{w.name} failed")))

    @precondition(lambda self: any(t.pending_releases() for t in self.trackers))
    @rule(data=st.data(), ok=st.booleans())
    def settle_release(self, data: st.DataObject, ok: bool) -> None:
        pending = [(t, c) for t in self.trackers for c in t.pending_releases()]
        tracker, c = data.draw(st.sampled_from(pending))
        tracker.settle(c, ok)

    @rule(seconds=st.sampled_from([1.0, 5.0, 7.0, 20.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def checks_inside_callbacks_passed(self) -> None:
        if self.callback_errors:
            raise self.callback_errors[0]

    @invariant()
    def completion_fires_once_and_only_when_done(self) -> None:
        if self.top is not None:
            assert len(self.results) == (1 if self.top.done else 0)

    def teardown(self) -> None:
        try:
            if self.top is not None:
                self._finish_and_judge()
        finally:
            # Drive whatever is left (an abandoned child) to its end, so a
            # failure above does not also leak unhandled errors.
            for op in self.ops.values():
                op.cancel("teardown")
                op.force("teardown")
            self.top = None
            self.ops = {}
            self.results = []
            self.trackers = []
            events = self.watch.close()
        assert not events, "unhandled errors: " + describe_unhandled(events)

    def _finish_and_judge(self) -> None:
        top = self.t
        if top.state == "idle" and not top.done:
            top.cancel("teardown")
        for _ in range(100):
            if top.done:
                break
            pending = [(t, c) for t in self.trackers for c in t.pending_releases()]
            live = [w for t in self.trackers for w in t.live_watched()]
            if pending:
                pending[0][0].settle(pending[0][1], True)
            elif live:
                live[0].deferred.callback("teardown")
            else:
                self.clock.advance(30)
        assert top.done, f"outer operation never completed: {top.describe()}"
        assert len(self.results) == 1
        self.checks_inside_callbacks_passed()
        result = self.results[0]
        raised = [e for t in self.trackers for e in t.raised]
        reached = errors_reaching(result)
        assert len({id(e) for e in reached}) == len(reached), ("duplicated", result)
        if self.STRICT:
            # Every cleanup error reaches the outer completion.
            missing = [e for e in raised if not any(e is r for r in reached)]
            assert not missing, (missing, result)
            extra = [e for e in reached if not any(e is r for r in raised)]
            assert not extra, (extra, result)
        else:
            # Each level's cleanup errors reach its own completion.
            for depth, op in self.ops.items():
                own: list[object] = []
                op.observe().addBoth(own.append)
                assert len(own) == 1
                mine = errors_reaching(own[0])
                lost = [e for e in self.trackers[depth].raised if not any(e is r for r in mine)]
                assert not lost, (depth, lost, own[0])
            # The outer one carries cleanup errors, or a child's own failure
            # (test_bug_child_outcome_becomes_parent_cleanup_error).
            outcomes = [t.outcome[1] for t in self.trackers if t.outcome is not None]
            unexplained = [
                e
                for e in reached
                if not any(e is r for r in raised) and not any(e is o for o in outcomes)
            ]
            assert not unexplained, (unexplained, result)
        # Cancels after completion change nothing and raise nothing.
        for path in CANCEL_PATHS:
            cancel_via(top, path, "late")
        assert self.results == [result]


NestedMachine.TestCase.settings = SETTINGS
TestNestedTorture = NestedMachine.TestCase

# The literal requirements of the reliability issue: every cleanup error
# reaches the outer completion, and any level may be cancelled any number of
# times (forcing) with the innermost resources still released first.


class NestedStrictMachine(NestedMachine):
    STRICT = True


class NestedForcedMachine(NestedMachine):
    FORCE = True
    STRICT = True
    GRACE = 12.0


NestedStrictMachine.TestCase.settings = SETTINGS
NestedForcedMachine.TestCase.settings = SETTINGS


def test_nested_torture_every_cleanup_error_reaches_outer() -> None:
    NestedStrictMachine.TestCase().runTest()


def test_nested_torture_with_forcing() -> None:
    NestedForcedMachine.TestCase().runTest()


# ---------------------------------------------------------------------------
# minimal reproductions of what the machines found


def _nested(depth: int, modes: str = "sync") -> tuple[Clock, list[Tracker], dict[int, LOp]]:
    clock = Clock()
    trackers = [Tracker(modes=[modes]) for _ in range(depth + 1)]
    ops: dict[int, LOp] = {}
    start_layer(depth, clock, trackers, ops).inputs.start()
    return clock, trackers, ops


def test_bug_force_abandons_child() -> None:
    """
    Spec: forcing "cancels pending asynchronous releases, releases resources
    still held, and fires the completion at once"; the reliability issue:
    "the innermost resources are released before the outer completion
    fires" and no DelayedCall is left.

    parent.cancel(); parent.force() -- the first moves both to 'stopping'
    and the parent waits for the child's cleanup (``release_operation``);
    the force once cancelled only the parent's wait (the Deferred returned by
    ``release_operation`` has no canceller), so the parent completes while
    the child is still in 'stopping', holding its "bye" Deferred, its stop
    timer and its custom resource.  Expected: the forced parent forwards
    the further cancel to the child (as Twisted forwards a cancel to the
    Deferred a cancelled one waits on), so the child is forced too.
    """
    clock, trackers, ops = _nested(1)
    parent, child = ops[1], ops[0]
    seen: list[object] = []
    parent.completion.addBoth(seen.append)
    parent.cancel("first")
    parent.force("second")
    assert len(seen) == 1
    try:
        assert child.done, f"child left in {child.state!r} holding {child.resources}"
        assert trackers[0].unreleased() == []
        assert clock.getDelayedCalls() == []
    finally:
        child.force()  # let it go, so no unhandled error is left behind


def test_bug_force_loses_child_cleanup_errors() -> None:
    """
    The same bug seen from the error side (issue: "every cleanup error
    reaches the outer completion").  All releases raise.  parent.cancel():
    the child's release of its resource raises (recorded by the child), the
    child waits for "bye".  parent.cancel() again: the parent completes with
    OperationCancelled(forced) whose cleanup_errors hold only the parent's
    own errors; the child's error never reaches it.
    """
    _clock, trackers, ops = _nested(1, modes="raise")
    parent, child = ops[1], ops[0]
    seen: list[object] = []
    parent.completion.addBoth(seen.append)
    parent.cancel("first")
    assert trackers[0].raised, "the child's release should have failed"
    parent.force("second")
    try:
        reached = errors_reaching(seen[0])
        missing = [e for e in trackers[0].raised if not any(e is r for r in reached)]
        assert not missing, f"child cleanup errors lost: {missing}"
    finally:
        child.force()


def test_bug_child_outcome_becomes_parent_cleanup_error() -> None:
    """
    ``release_operation``: "Its cleanup errors become ours".  But when the
    child is already winding down with a failure of its own (so the
    parent's cancel is a no-op for it) and has *no* cleanup errors, its
    outcome failure is reported as the parent's cleanup error; with cleanup
    errors, the same outcome is dropped and only those are reported.

    Sequence (clock advances; all releases succeed): child expires at 20 s
    (-> stopping, fails with TransferTimeout), parent expires at 21 s (->
    stopping, releases the child), both "bye" Deferreds fire.  Expected: the
    parent fails with its own TransferTimeout, no CleanupFailed.  Observed:
    CleanupFailed(outcome=parent's TransferTimeout, errors=(child's
    TransferTimeout,)).
    """
    clock, trackers, ops = _nested(1)
    parent, child = ops[1], ops[0]
    seen: list[object] = []
    parent.completion.addBoth(seen.append)
    clock.advance(20)
    clock.advance(1)
    assert (parent.state, child.state) == ("stopping", "stopping")
    for tracker in (trackers[0], trackers[1]):
        tracker.live_watched("bye")[0].deferred.callback("ok")
    assert len(seen) == 1
    result = seen[0]
    assert isinstance(result, Failure)
    assert not isinstance(result.value, CleanupFailed), result.value


def test_bug_grandchild_cleanup_errors_dropped() -> None:
    """
    Issue: "every cleanup error reaches the outer completion".  Three levels;
    levels 0 and 1 have releases that raise, level 2's succeed.

    1. level 0's "work" fails: level 0 -> stopping (its release raises), its
       "bye" fires: level 0 completes with CleanupFailed(work error,
       [level-0 errors]).
    2. level 1 watches it: child_failed -> stopping with that failure as its
       outcome (its own release raises).
    3. outer.cancel(): the outer releases level 1 (a first cancel in a
       cleanup state: no-op) and waits; level 1's "bye" fires: level 1
       completes with CleanupFailed(outcome=<level 0's CleanupFailed>,
       errors=[level-1 errors]).
    4. ``_settle_child`` passes that on; ``flatten_errors`` keeps only
       ``errors``, so the level-0 errors inside ``outcome`` are dropped.

    Expected: the outer completion carries the level-0 and level-1 errors.
    Observed: only level 1's.  (Without level-1 errors, the same outcome
    would instead be flattened whole: see the test above.)
    """
    _clock, trackers, ops = _nested(2, modes="raise")
    trackers[2].modes = ["sync"]
    seen: list[object] = []
    ops[2].completion.addBoth(seen.append)
    trackers[0].live_watched("work")[0].deferred.errback(Failure(InjectedError("work")))
    trackers[0].live_watched("bye")[0].deferred.callback("ok")
    assert ops[0].done and ops[1].state == "stopping"
    ops[2].cancel("outer")
    trackers[1].live_watched("bye")[0].deferred.callback("ok")
    trackers[2].live_watched("bye")[0].deferred.callback("ok")
    assert len(seen) == 1 and trackers[0].raised and trackers[1].raised
    reached = errors_reaching(seen[0])
    missing = [e for t in trackers for e in t.raised if not any(e is r for r in reached)]
    assert not missing, f"lost: {missing} from {seen[0]}"


def test_layer_core_is_shared_per_level() -> None:
    # Sanity of the sample: three levels, each with its own tracker.
    _clock, _trackers, ops = _nested(2)
    assert sorted(ops) == [0, 1, 2]
    assert all(isinstance(op.core, LayerCore) for op in ops.values())
    assert [op.state for op in ops.values()] == ["running"] * 3
    seen: list[object] = []
    ops[2].completion.addBoth(seen.append)
    ops[2].cancel()
    ops[2].force()
    for op in ops.values():
        op.cancel()
        op.force()
    assert all(op.done for op in ops.values())
    assert len(seen) == 1
