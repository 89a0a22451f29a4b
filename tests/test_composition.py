"""
Cancellation that composes with the rest of Twisted (issue 10).

Twisted code cancels defensively and more than once: ``addTimeout``,
``DeferredList.cancel()``, a protocol's ``connectionLost``, a lock or queue
given up on.  Each test here puts ``op.completion`` (or an observer) where
Twisted's own cancellation tests put a Deferred, and checks that the rules
still hold: one completion, after cleanup, with the real outcome; repeated
cancels stay polite; forcing is deliberate.  The numbered findings of the
issue each have a regression test below, named after them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from structlog.testing import capture_logs
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredLock,
    DeferredQueue,
    DeferredSemaphore,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from fsmcancel import (
    Cancellable,
    CleanupFailed,
    Operation,
    OperationBuilder,
    OperationCancelled,
    OperationFactory,
    UnexpectedInput,
)
from tests.test_core import (
    Core,
    TestNestedOperations,
    child_factory,
    download_factory,
    error_of,
    results,
    started,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- a machine that starts a call, then arms its timer ------------------------------------


class Call(Cancellable, Protocol):
    def start(self) -> None: ...
    def got(self, value: object) -> None: ...
    def failed(self, failure: Failure) -> None: ...
    def tick(self) -> None: ...
    def retry(self) -> None: ...


@dataclass
class CallCore:
    call: Deferred[Any] = field(default_factory=Deferred)
    released: list[str] = field(default_factory=list)
    entered: int = 0
    succeed_with: object = None


COp = Operation[Call, CallCore]


def call_factory(grace: float | None = 30.0) -> OperationFactory[Call, CallCore]:
    b = OperationBuilder(Call, CallCore, name="call", grace=grace)
    idle = b.state("idle")

    def attempt(inputs: Call, op: COp) -> int:
        op.core.entered += 1
        op.own(object(), lambda _: op.core.released.append("attempt"), name="attempt")
        return op.core.entered

    waiting = b.state("waiting", attempt, resources=["call", "DelayedCall", "attempt", "thing"])
    done = b.terminal_state("done")

    @idle.upon(Call.start).to(waiting)
    def start(inputs: Call, op: COp) -> None:
        # The commonest pattern: start a call, then arm its timer.  The
        # call may have failed already (a cached failure, maybeDeferred).
        op.watch(op.core.call, inputs.got, name="call")
        op.call_later(5, inputs.tick)
        op.own(object(), lambda _: op.core.released.append("thing"), name="thing")

    @waiting.upon(Call.got).to(done)
    def got(inputs: Call, op: COp, attempt: int, value: object) -> None:
        op.succeed(value if op.core.succeed_with is None else op.core.succeed_with)

    @waiting.upon(Call.retry).to(waiting)
    def retry(inputs: Call, op: COp, attempt: int) -> None:
        op.call_later(5, inputs.tick)

    @waiting.upon(Call.tick).loop()
    def tick(inputs: Call, op: COp, attempt: int) -> None:
        pass

    idle.upon(Call.cancel).to(done).returns(None)
    waiting.upon(Call.cancel).to(done).returns(None)
    return b.build()


class TestFinding1WatchedCallAlreadyFailed:
    def test_the_first_error_is_reported_and_everything_released(self, clock: Clock) -> None:
        core = CallCore(call=fail(ValueError("refused")))
        op = call_factory()(core, clock=clock)
        out = results(op.completion)
        op.inputs.start()
        error = error_of(out)
        assert isinstance(error, ValueError) and str(error) == "refused"
        assert core.released == ["attempt", "thing"]  # each released, newest first
        assert clock.getDelayedCalls() == []  # the timer was never left armed
        clock.advance(10)  # and nothing fires after completion


class TestFinding2ReleasedAsyncioCall:
    def test_a_released_from_future_call_is_not_a_cleanup_error(self, clock: Clock) -> None:
        loop = asyncio.new_event_loop()
        try:
            future: asyncio.Future[str] = loop.create_future()
            core = CallCore(call=Deferred.fromFuture(future))
            op = call_factory()(core, clock=clock)
            out = results(op.completion)
            with capture_logs() as logs:
                op.inputs.start()
                op.cancel("user")
                # fromFuture reports the cancel once the loop has run.
                loop.run_until_complete(asyncio.sleep(0))
            error = error_of(out)
            assert isinstance(error, OperationCancelled) and error.cleanup_errors == ()
            assert future.cancelled()
            assert [e for e in logs if e["log_level"] == "error"] == []
        finally:
            loop.close()

    def test_a_success_that_abandons_an_asyncio_call_stays_a_success(self, clock: Clock) -> None:
        loop = asyncio.new_event_loop()
        try:
            future: asyncio.Future[str] = loop.create_future()
            b = OperationBuilder(Call, CallCore, name="abandon")
            idle = b.state("idle")
            waiting = b.state("waiting", resources=["asyncio call"])
            done = b.terminal_state("done")

            @idle.upon(Call.start).to(waiting)
            def start(inputs: Call, op: COp) -> None:
                op.watch(Deferred.fromFuture(future), inputs.got, name="asyncio call")

            @waiting.upon(Call.tick).to(done)
            def enough(inputs: Call, op: COp) -> None:
                op.succeed("without it")

            idle.upon(Call.cancel).to(done).returns(None)
            waiting.upon(Call.cancel).to(done).returns(None)
            op = b.build()(CallCore(), clock=clock)
            out = results(op.completion)
            op.inputs.start()
            op.inputs.tick()
            loop.run_until_complete(asyncio.sleep(0))
            assert out == ["without it"]
        finally:
            loop.close()


class TestFinding3ObserverCancelsTheCompletion:
    def test_the_completion_keeps_its_outcome(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        out = results(op.completion)
        op.core.calls[0].callback("last")  # succeeded; closing politely
        assert op.state == "done" and not op.done
        op.completion.cancel()  # documented as a no-op here
        op.observe().addCallback(lambda r: op.completion.cancel())
        op.core.close_waits[0].callback(None)
        assert out == ["last"]

    def test_with_cleanup_errors(self, clock: Clock) -> None:
        op = started(clock, slow_close=True, fail_release={"buffer"})
        out = results(op.completion)
        op.cancel("user")
        op.observe().addErrback(lambda f: op.completion.cancel())
        op.core.close_waits[0].callback(None)
        error = error_of(out)
        assert isinstance(error, OperationCancelled) and len(error.cleanup_errors) == 1

    def test_the_completion_is_delivered_before_observers(self, clock: Clock) -> None:
        op = started(clock)
        order: list[str] = []
        op.observe().addBoth(lambda _: order.append("observer 1"))
        op.completion.addBoth(lambda _: order.append("completion"))
        op.observe().addBoth(lambda _: order.append("observer 2"))
        op.core.calls[0].callback("last")
        assert order == ["completion", "observer 1", "observer 2"]


class TestFinding4SucceedWithADeferred:
    def test_it_is_refused_naming_the_operation(self, clock: Clock) -> None:
        core = CallCore(succeed_with=succeed("inner"))
        op = call_factory()(core, clock=clock)
        out = results(op.completion)
        seen = results(op.observe())
        op.inputs.start()
        core.call.callback("x")
        error = error_of(out)
        assert isinstance(error, TypeError)
        assert "op.succeed() was given a Deferred" in str(error) and "call#" in str(error)
        # Everyone sees the same outcome.
        assert isinstance(seen[0], Failure) and seen[0].value is error


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class TestFinding5UnprintableReason:
    @pytest.mark.parametrize("how", ["op", "inputs", "force"])
    def test_cancel_never_raises_and_completes_once(self, clock: Clock, how: str) -> None:
        op = started(clock)
        out = results(op.completion)
        reason: Any = Unprintable()
        if how == "op":
            op.cancel(reason)
        elif how == "inputs":
            op.inputs.cancel(reason)
        else:
            op.force(reason)
        op.cancel(reason)
        assert op.done and len(out) == 1
        error = error_of(out)
        assert isinstance(error, OperationCancelled)
        assert error.reason is not None and "unprintable" in error.reason
        assert "unprintable" in str(error)

    def test_an_unprintable_cleanup_error_or_result_is_still_reported(self, clock: Clock) -> None:
        class Bad(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no")

        op = call_factory()(CallCore(succeed_with=Unprintable()), clock=clock)

        def boom(_: object) -> None:
            raise Bad()

        op.inputs.start()
        op.own(object(), boom, name="bad release")
        out = results(op.completion)
        op.core.call.callback("x")
        error = error_of(out)
        assert isinstance(error, CleanupFailed) and "unprintable" in str(error)


class TestFinding6ErrorMessages:
    def test_unknown_input_names_operation_state_and_input(self, clock: Clock) -> None:
        op = started(clock)
        with pytest.raises(AttributeError, match=r"download#\d+: no input 'nope' \(in state"):
            op.inputs.nope  # type: ignore[attr-defined]  # noqa: B018
        results(op.completion)
        op.force()

    def test_cancel_with_too_many_arguments(self, clock: Clock) -> None:
        op = started(clock)
        with pytest.raises(
            TypeError,
            match=r"download#\d+: input 'cancel' in state 'receiving' takes one optional "
            r"argument, reason; got \('a', 'b'\)",
        ):
            op.inputs.cancel("a", "b")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"got \(why=\.\.\.\)"):
            op.inputs.cancel(why="x")  # type: ignore[call-arg]
        assert op.state == "receiving" and not op.done  # nothing changed
        results(op.completion)
        op.force()

    def test_fail_with_a_string_is_refused(self, clock: Clock) -> None:
        b = OperationBuilder(Call, CallCore, name="stringly")
        idle = b.state("idle")
        done = b.terminal_state("done")

        @idle.upon(Call.start).to(done)
        def start(inputs: Call, op: COp) -> None:
            op.fail("a string")  # type: ignore[arg-type]

        idle.upon(Call.cancel).to(done).returns(None)
        op = b.build()(CallCore(), clock=clock)
        out = results(op.completion)
        op.inputs.start()
        error = error_of(out)
        assert isinstance(error, TypeError)
        assert "op.fail() takes an exception or a Failure, not str 'a string'" in str(error)


# -- defensive cancels --------------------------------------------------------------------


class TestDefensiveCancels:
    def test_deferred_list_cancel_is_polite(self, clock: Clock) -> None:
        ops = [started(clock, slow_close=True) for _ in range(3)]
        dl = DeferredList([op.completion for op in ops], consumeErrors=True)
        out: list[Any] = []
        dl.addCallback(out.append)
        dl.cancel()
        dl.cancel()  # a fired-or-not guard would not help; it is harmless
        assert out == [] and all(not op.done for op in ops)
        for op in ops:
            op.core.close_waits[0].callback(None)
        [pairs] = out
        errors = [f.value for ok, f in pairs if not ok]
        assert len(errors) == 3
        assert all(isinstance(e, OperationCancelled) and not e.forced for e in errors)

    def test_gather_results_cancel_is_polite(self, clock: Clock) -> None:
        ops = [started(clock, slow_close=True) for _ in range(2)]
        gathered = gatherResults([op.completion for op in ops], consumeErrors=True)
        out = results(gathered)
        gathered.cancel()
        for op in ops:
            op.completion.cancel()
            op.core.close_waits[0].callback(None)
        assert len(out) == 1 and all(op.done for op in ops)

    def test_called_is_not_done(self, clock: Clock) -> None:
        # Once cancelled, the completion is "called" (paused on an inner
        # Deferred) but the operation is not done: guard on op.done.
        op = started(clock, slow_close=True)
        op.completion.cancel()
        assert op.completion.called and not op.done
        op.core.close_waits[0].callback(None)
        assert op.done
        results(op.completion)

    def test_an_observer_cancelled_by_add_timeout_only_detaches(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        watcher = op.observe().addTimeout(3, clock)
        seen = results(watcher)
        out = results(op.completion)
        clock.advance(3)
        assert len(seen) == 1 and isinstance(seen[0], Failure)
        assert not op.done and op.state == "receiving"
        results(op.completion)
        op.force()
        assert len(out) == 1

    def test_a_lock_waiter_owned_by_a_state_is_given_up(self, clock: Clock) -> None:
        lock = DeferredLock()
        held = lock.acquire()
        assert held.called
        op = call_factory()(CallCore(call=lock.acquire()), clock=clock)
        out = results(op.completion)
        op.inputs.start()
        op.cancel("no longer needed")
        assert isinstance(error_of(out), OperationCancelled)
        lock.release()
        assert not lock.locked  # the cancelled waiter did not take it

    def test_semaphore_and_queue_waiters_are_given_up(self, clock: Clock) -> None:
        sem = DeferredSemaphore(1)
        sem.acquire()
        queue: DeferredQueue[str] = DeferredQueue()
        for call in (sem.acquire(), queue.get()):
            op = call_factory()(CallCore(call=call), clock=clock)
            out = results(op.completion)
            op.inputs.start()
            op.cancel()
            assert isinstance(error_of(out), OperationCancelled)
        sem.release()
        assert sem.tokens == 1
        queue.put("x")
        assert queue.pending == ["x"]  # nobody was still waiting

    def test_as_future_cancel_is_a_polite_cancel(self, clock: Clock) -> None:
        loop = asyncio.new_event_loop()
        try:
            op = started(clock, slow_close=True)
            future = op.completion.asFuture(loop)
            future.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            assert op.state == "done" and not op.done  # cancelled, cleaning up
            op.core.close_waits[0].callback(None)
            assert op.done
        finally:
            loop.close()


class TestChildCancelledBySomeoneElse:
    def parent(self, clock: Clock) -> tuple[Operation[Any, Core], Operation[Any, Core]]:
        children: list[Operation[Any, Core]] = []
        parent = TestNestedOperations().parent(clock, children)
        parent.inputs.start()
        return parent, children[0]

    def test_the_parent_waits_for_the_child_cleanup_it_did_not_start(self, clock: Clock) -> None:
        parent, child = self.parent(clock)
        out = results(parent.completion)
        child.cancel("peer hung up")  # the child's protocol cancels it
        assert not child.done  # its socket is closing
        # The child's failure reached the parent as an input already, or the
        # parent cancels: either way nobody forces the child.
        parent.cancel("user")
        assert not child.done and not child.core.close_waits[0].called
        child.core.close_waits[0].callback(None)
        assert child.done and parent.done and len(out) == 1

    def test_forcing_the_parent_forces_the_child(self, clock: Clock) -> None:
        parent, child = self.parent(clock)
        out = results(parent.completion)
        parent.cancel("user")
        assert not child.done
        parent.force("shutdown")
        assert child.done and parent.done and len(out) == 1
        assert child.core.close_waits[0].called


# -- API rough edges ----------------------------------------------------------------------


class TestApiEdges:
    def test_resources_by_name(self, clock: Clock) -> None:
        op = started(clock)
        buffer = op.resource("buffer")
        op.release(buffer)
        assert op.core.released == ["buffer"]
        with pytest.raises(KeyError, match=r"holds no resource named 'buffer'; it holds: "):
            op.resource("buffer")
        results(op.completion)
        op.force()

    def test_to_itself_reenters(self, clock: Clock) -> None:
        core = CallCore()
        op = call_factory()(core, clock=clock)
        op.inputs.start()
        assert core.entered == 1 and len(clock.getDelayedCalls()) == 1
        op.inputs.retry()
        # Left and re-entered: the old attempt and its timer were released,
        # and the data factory ran again.
        assert core.entered == 2 and core.released == ["thing", "attempt"]
        assert len(clock.getDelayedCalls()) == 1
        assert op.resources == ("attempt", "DelayedCall")
        op.inputs.tick()  # a loop keeps them
        assert op.resources == ("attempt", "DelayedCall")
        results(op.completion)
        op.force()

    def test_hand_over_several_at_once(self, clock: Clock) -> None:
        class H(Cancellable, Protocol):
            def next(self, keep: tuple[object, ...]) -> None: ...

        b = OperationBuilder(H, list, name="handover")
        a = b.state("a", resources=["x", "y", "z"])
        bb = b.state("b", resources=["x", "y"])
        done = b.terminal_state("done")
        x, y, z = object(), object(), object()

        @a.upon(H.next).to(bb)
        def nxt(inputs: H, op: Operation[H, list[object]], keep: tuple[object, ...]) -> None:
            op.hand_over(*keep)

        a.upon(H.cancel).to(done).returns(None)
        bb.upon(H.cancel).to(done).returns(None)
        factory = b.build()

        def start(released: list[object]) -> Operation[H, list[object]]:
            op = factory(released, clock=clock)
            for thing, name in ((x, "x"), (y, "y"), (z, "z")):  # owned by "a"
                op.own(thing, released.append, name=name)
            return op

        released: list[object] = []
        op = start(released)
        op.inputs.next((x, y))
        assert released == [z] and op.resources == ("x", "y")
        out = results(op.completion)
        op.force()
        assert released == [z, y, x] and len(out) == 1
        # All or nothing: one thing not owned, and nothing moves.
        released = []
        op = start(released)
        out = results(op.completion)
        op.inputs.next((x, object()))
        assert isinstance(error_of(out), ValueError)
        assert released == [z, y, x]  # the behaviour failed: all released

    def test_operation_failed_names_the_state_where_the_input_arrived(self, clock: Clock) -> None:
        with capture_logs() as logs:
            op = download_factory()(Core(raise_in={"finished"}), clock=clock)
            op.inputs.start()
            out = results(op.completion)
            op.inputs.finished()
        [event] = [e for e in logs if e["event"] == "operation failed"]
        assert event["state"] == "receiving"
        assert isinstance(error_of(out), KeyError)

    def test_an_unexpected_input_is_still_the_callers_mistake(self, clock: Clock) -> None:
        op = started(clock)
        with pytest.raises(UnexpectedInput):
            op.inputs.start()
        results(op.completion)
        op.force()


def test_child_factory_is_shared() -> None:
    # The child machine used above is the one of test_core's rule 9 tests.
    assert child_factory().name == "child"


def test_cancelled_error_is_trapped_by_twisted_code(clock: Clock) -> None:
    op = started(clock)
    out: list[object] = []
    op.completion.addErrback(lambda f: out.append(f.trap(CancelledError)))
    op.cancel()
    assert out == [CancelledError]  # OperationCancelled is one
