"""
The core rules of an operation, one test class per numbered rule of the
design (see the README and the docstrings of ``fsmcancel/core/``), under ``task.Clock``.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import pytest
import structlog
from structlog.testing import capture_logs
from twisted.internet.base import DelayedCall
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from fsmcancel import (
    Cancellable,
    CleanupFailed,
    Operation,
    OperationBuilder,
    OperationCancelled,
    OperationFactory,
    OperationIncomplete,
    ReentrantInputError,
    Registry,
    UnexpectedInput,
)


class Download(Cancellable, Protocol):
    def start(self) -> None: ...
    def chunk(self, data: str) -> None: ...
    def finished(self) -> None: ...
    def closed(self) -> None: ...
    def peek(self) -> str: ...


@dataclass
class Core:
    """
    What the test controls: the calls the operation starts, the releases it
    performs (in order), and the async releases it waits for.
    """

    calls: list[Deferred[str]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    close_waits: list[Deferred[None]] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    fail_release: set[str] = field(default_factory=set)
    raise_in: set[str] = field(default_factory=set)
    slow_close: bool = False


Op = Operation[Download, Core]


def tracked(op: Operation[Any, Core], name: str) -> None:
    """
    Own a resource whose release the test can see (and make fail).
    """

    def release(_: object) -> None:
        op.core.released.append(name)
        if name in op.core.fail_release:
            raise RuntimeError(f"release of {name} failed")

    op.own(object(), release, name=name)


def download_factory(unexpected: Any = "raise") -> OperationFactory[Download, Core]:
    b = OperationBuilder(Download, Core, name="download", unexpected=unexpected)
    idle = b.state("idle")
    receiving = b.state("receiving", resources=["request", "buffer", "Deferred", "DelayedCall"])
    closing = b.cleanup_state("closing", resources=["connection"])
    done = b.terminal_state("done")

    @idle.upon(Download.start).to(receiving)
    def start(inputs: Download, op: Op) -> None:
        if "start" in op.core.raise_in:
            tracked(op, "half-acquired")
            raise ValueError("start exploded")
        tracked(op, "request")
        tracked(op, "buffer")
        d: Deferred[str] = Deferred()
        op.core.calls.append(d)
        op.watch(d, inputs.chunk)
        op.call_later(30, inputs.finished)

    @receiving.upon(Download.chunk).loop()
    def chunk(inputs: Download, op: Op, data: str) -> None:
        op.core.received.append(data)
        if data == "last":
            inputs.finished()  # re-entrant: queued, runs after this transition

    @receiving.upon(Download.finished).to(closing)
    def finished(inputs: Download, op: Op) -> None:
        if "finished" in op.core.raise_in:
            raise KeyError("finished exploded")
        op.succeed("".join(op.core.received))
        enter_closing(inputs, op)

    @receiving.upon(Download.cancel).to(closing)
    def cancel(inputs: Download, op: Op, reason: str | None = None) -> None:
        enter_closing(inputs, op)

    def enter_closing(inputs: Download, op: Op) -> None:
        def close(_: object) -> Deferred[None] | None:
            op.core.released.append("connection")
            if "connection" in op.core.fail_release:
                return fail(RuntimeError("close failed"))
            if op.core.slow_close:
                wait: Deferred[None] = Deferred()
                op.core.close_waits.append(wait)
                return wait
            return None

        op.own(object(), close, name="connection")
        inputs.closed()

    closing.upon(Download.closed).to(done).returns(None)
    idle.upon(Download.cancel).to(done).returns(None)
    receiving.upon(Download.peek).loop().returns("peeked")
    return b.build()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def results(d: Deferred[Any]) -> list[object]:
    out: list[object] = []
    d.addBoth(out.append)
    return out


def error_of(out: list[object]) -> BaseException:
    """
    The exception a Deferred failed with (and check that it did fail).
    """
    [result] = out
    assert isinstance(result, Failure), result
    value = result.value
    assert isinstance(value, BaseException)
    return value


def started(clock: Clock, **core: Any) -> Op:
    op = download_factory()(Core(**core), clock=clock)
    op.inputs.start()
    return op


class TestOneCompletion:
    """
    Rule 1: exactly one completion, firing exactly once.
    """

    def test_success(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        op.core.calls[0].callback("a")
        op.inputs.chunk("b")
        assert out == []
        op.inputs.chunk("last")
        assert out == ["ablast"]
        assert op.state == "done" and op.done

    def test_failure(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        op.core.calls[0].errback(ConnectionError("peer reset"))
        [failure] = out
        assert isinstance(failure, Failure) and failure.check(ConnectionError)
        assert op.done

    def test_cancelled(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        op.cancel("user clicked stop")
        [failure] = out
        assert isinstance(failure, Failure)
        assert isinstance(failure.value, CancelledError)
        assert isinstance(failure.value, OperationCancelled)

    def test_fires_once_whatever_follows(self, clock: Clock) -> None:
        op = started(clock)
        fired: list[object] = []
        op.completion.addBoth(fired.append)
        op.core.calls[0].callback("x")
        op.inputs.chunk("last")
        op.cancel()
        op.completion.cancel()
        clock.advance(60)
        assert fired == ["xlast"]

    def test_observers_get_their_own_deferred(self, clock: Clock) -> None:
        op = started(clock)
        first, second = op.observe(), op.observe()
        first.addCallback(lambda r: r + " changed by first")
        seen = results(second)
        op.core.calls[0].callback("last")
        assert seen == ["last"]
        late = results(op.observe())
        assert late == ["last"]

    def test_cancelling_an_observer_only_detaches_it(self, clock: Clock) -> None:
        op = started(clock)
        watcher = op.observe()
        seen = results(watcher)
        watcher.cancel()
        assert isinstance(seen[0], Failure) and seen[0].check(CancelledError)
        assert not op.done and op.state == "receiving"
        out = results(op.completion)
        op.core.calls[0].callback("last")
        assert out == ["last"]

    def test_an_observer_cancelling_another_skips_no_one(self, clock: Clock) -> None:
        op = started(clock)
        first, second, third = op.observe(), op.observe(), op.observe()
        first.addCallback(lambda _: second.cancel())
        seen = [results(d) for d in (first, second, third)]
        op.core.calls[0].callback("last")
        assert seen[0] == [None] and seen[2] == ["last"]
        assert isinstance(seen[1][0], Failure) and seen[1][0].check(CancelledError)
        results(op.completion)

    def test_terminal_without_outcome_is_an_error_naming_the_state(self, clock: Clock) -> None:
        class Ping(Cancellable, Protocol):
            def go(self) -> None: ...

        b = OperationBuilder(Ping, object, name="ping")
        a = b.state("a")
        end = b.terminal_state("end")
        a.upon(Ping.go).to(end).returns(None)
        a.upon(Ping.cancel).to(end).returns(None)
        op = b.build()(object(), clock=clock)
        out = results(op.completion)
        op.inputs.go()
        [failure] = out
        assert isinstance(failure, Failure) and failure.check(OperationIncomplete)
        assert "ping#" in str(failure.value) and "'end'" in str(failure.value)


class TestCancelInput:
    """
    Rule 2: the completion's canceller feeds ``cancel``, which every state
    accepts.
    """

    def test_completion_cancel_feeds_the_machine(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        op.completion.cancel()
        assert op.core.released == ["buffer", "request", "connection"]
        assert op.state == "done"
        assert isinstance(out[0], Failure) and out[0].check(OperationCancelled)
        assert op.core.calls[0].called  # the in-flight call was really cancelled

    def test_three_cancel_paths_are_one(self, clock: Clock) -> None:
        for how in ("completion", "op", "input"):
            op = started(clock)
            out = results(op.completion)
            if how == "completion":
                op.completion.cancel()
            elif how == "op":
                op.cancel("r")
            else:
                op.inputs.cancel("r")
            assert op.state == "done", how
            assert isinstance(out[0], Failure) and out[0].check(OperationCancelled), how

    def test_cancel_in_initial_state(self, clock: Clock) -> None:
        op = download_factory()(Core(), clock=clock)
        out = results(op.completion)
        op.completion.cancel()
        assert op.state == "done"
        assert isinstance(out[0], Failure)
        assert isinstance(out[0].value, OperationCancelled)
        assert out[0].value.state == "idle"

    def test_first_cancel_in_cleanup_state_is_a_no_op(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        out = results(op.completion)
        op.core.calls[0].callback("last")
        assert op.state == "done" and out == []  # waiting for the close
        op.cancel("too late")
        assert out == [] and len(op.core.close_waits) == 1
        op.core.close_waits[0].callback(None)
        assert out == ["last"]

    def test_cancel_after_completion_never_raises(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        op.core.calls[0].callback("last")
        op.cancel()
        op.completion.cancel()
        op.inputs.cancel("again")
        assert out == ["last"]


class TestStateResources:
    """
    Rule 3: a state's resources are released when it is left, newest first,
    unless handed over.
    """

    def test_released_on_leaving_in_reverse_order(self, clock: Clock) -> None:
        op = started(clock)
        assert op.resources == ("request", "buffer", "Deferred", "DelayedCall")
        op.core.calls[0].callback("x")
        assert list(op.resources) == ["request", "buffer", "DelayedCall"]  # call finished
        op.inputs.finished()
        assert op.core.released == ["buffer", "request", "connection"]
        assert clock.getDelayedCalls() == []

    def test_loop_keeps_resources(self, clock: Clock) -> None:
        op = started(clock)
        op.core.calls[0].callback("x")
        op.inputs.chunk("y")
        assert op.core.released == []
        assert "request" in op.resources

    def test_watched_call_cancelled_and_never_heard_from_again(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        call = op.core.calls[0]
        op.cancel()
        assert call.called
        call.callback("late")  # Twisted swallows a result after cancel...
        assert op.done and len(out) == 1  # ...and nothing reached the machine

    def test_timer_disarmed(self, clock: Clock) -> None:
        op = started(clock)
        results(op.completion)
        assert len(clock.getDelayedCalls()) == 1
        op.cancel()
        assert clock.getDelayedCalls() == []

    def test_transport_aborted(self, clock: Clock) -> None:
        class Conn(Cancellable, Protocol):
            def connected(self, transport: StringTransport) -> None: ...

        b = OperationBuilder(Conn, object, name="conn")
        waiting = b.state("waiting")
        up = b.state("up", resources=["transport"])
        gone = b.terminal_state("gone")

        @waiting.upon(Conn.connected).to(up)
        def connected(
            inputs: Conn, op: Operation[Conn, object], transport: StringTransport
        ) -> None:
            op.own(transport)

        waiting.upon(Conn.cancel).to(gone).returns(None)
        up.upon(Conn.cancel).to(gone).returns(None)
        op = b.build()(object(), clock=clock)
        results(op.completion)
        transport = StringTransport()
        op.inputs.connected(transport)
        assert not transport.disconnecting
        op.cancel()
        assert transport.disconnecting

    def test_unknown_resource_needs_a_release(self, clock: Clock) -> None:
        op = started(clock)
        with pytest.raises(
            TypeError, match=r"download#\d+: don't know how to release .* 'receiving'"
        ):
            op.own(42)

    def test_hand_over_keeps_a_resource_alive(self, clock: Clock) -> None:
        class Relay(Cancellable, Protocol):
            def go(self) -> None: ...
            def stop(self) -> None: ...

        released: list[str] = []
        b = OperationBuilder(Relay, object, name="relay")
        one, two = b.state("one"), b.state("two")
        three = b.state("three")
        end = b.terminal_state("end")

        @one.upon(Relay.go).to(two)
        def first(inputs: Relay, op: Operation[Relay, object]) -> None:
            op.own("conn", lambda _: released.append("conn"), name="conn")
            op.own("scratch", lambda _: released.append("scratch"), name="scratch")

        @two.upon(Relay.go).to(three)
        def second(inputs: Relay, op: Operation[Relay, object]) -> None:
            op.hand_over("conn")

        @three.upon(Relay.stop).to(end)
        def stop(inputs: Relay, op: Operation[Relay, object]) -> None:
            op.succeed(None)

        for s in (one, two, three):
            s.upon(Relay.cancel).to(end).returns(None)
        op = b.build()(object(), clock=clock)
        op.inputs.go()
        op.inputs.go()
        assert released == ["scratch"] and op.resources == ("conn",)
        op.inputs.stop()
        assert released == ["scratch", "conn"]

    def test_hand_over_outside_a_transition_is_refused(self, clock: Clock) -> None:
        op = started(clock)
        with pytest.raises(ValueError, match="is not owned by the state being left"):
            op.hand_over("nothing")

    def test_release_early(self, clock: Clock) -> None:
        op = started(clock)
        timer = cast(DelayedCall, clock.getDelayedCalls()[0])
        op.release(timer)
        assert not timer.active() and "DelayedCall" not in op.resources
        with pytest.raises(ValueError, match="is not owned"):
            op.release(timer)

    def test_data_state_data_is_dropped_when_left(self, clock: Clock) -> None:
        class Session(Cancellable, Protocol):
            def open(self, key: str) -> None: ...
            def close(self) -> None: ...

        @dataclass
        class Handle:
            key: str

        seen: list[str] = []
        b = OperationBuilder(Session, object, name="session")
        closed = b.state("closed")

        def open_handle(inputs: Session, op: Operation[Session, object], key: str) -> Handle:
            op.own(key, lambda k: seen.append(f"released {k}"), name=key)
            return Handle(key)

        opened = b.state("opened", open_handle)
        end = b.terminal_state("end")
        closed.upon(Session.open).to(opened).returns(None)

        @opened.upon(Session.close).to(end)
        def close(inputs: Session, op: Operation[Session, object], handle: Handle) -> None:
            seen.append(f"closing {handle.key}")
            op.succeed(handle.key)

        closed.upon(Session.cancel).to(end).returns(None)
        opened.upon(Session.cancel).to(end).returns(None)
        op = b.build()(object(), clock=clock)
        op.inputs.open("k1")
        assert op.state == "opened" and op.resources == ("k1",)
        out = results(op.completion)
        op.inputs.close()
        assert seen == ["closing k1", "released k1"]
        assert out == ["k1"]
        assert op._machine.__automat_data__ is None


class TestAsynchronousCleanup:
    """
    Rule 4: callbacks on the completion run only after cleanup has finished;
    repeated cancels change nothing; forcing is deliberate (``op.force()``)
    or the cleanup grace expiring.
    """

    def test_completion_waits_for_async_release(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        out = results(op.completion)
        op.completion.cancel()
        # Twisted would errback a canceled Deferred at once; ours waits.
        assert out == [] and op.state == "done"
        op.core.close_waits[0].callback(None)
        assert isinstance(out[0], Failure) and out[0].check(OperationCancelled)
        assert op.core.released == ["buffer", "request", "connection"]

    def test_errback_sees_everything_released(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        snapshot: list[list[str]] = []
        op.completion.addErrback(lambda f: snapshot.append(list(op.core.released)))
        op.cancel()
        op.core.close_waits[0].callback(None)
        assert snapshot == [["buffer", "request", "connection"]]

    def test_repeated_cancels_of_the_completion_are_idempotent(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        out = results(op.completion)
        for _ in range(5):
            # After the first, Twisted forwards each to the innermost Deferred.
            op.completion.cancel()
        assert out == [] and not op.core.close_waits[0].called
        op.core.close_waits[0].callback(None)
        [failure] = out
        assert isinstance(failure, Failure)
        error = failure.value
        assert isinstance(error, OperationCancelled) and not error.forced

    def test_repeated_op_cancel_keeps_the_first_reason(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        out = results(op.completion)
        op.cancel("first")
        op.cancel("second")
        op.inputs.cancel("third")
        assert out == []
        op.core.close_waits[0].callback(None)
        error = error_of(out)
        assert isinstance(error, OperationCancelled)
        assert not error.forced and error.reason == "first" and error.state == "receiving"

    def test_force_cancels_pending_releases(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        out = results(op.completion)
        op.completion.cancel()
        assert out == []
        op.force("shutting down")
        error = error_of(out)
        assert isinstance(error, OperationCancelled) and error.forced
        assert error.reason is None  # the reason of the request that was recognised
        assert op.core.close_waits[0].called  # the pending release was cancelled
        assert "forced" in str(error)

    def test_forcing_keeps_an_outcome_already_decided(self, clock: Clock) -> None:
        # The result is known; only the polite close is cut short.
        op = started(clock, slow_close=True)
        out = results(op.completion)
        op.core.calls[0].callback("last")  # succeed, then wait for the close
        assert out == [] and op.state == "done"
        op.cancel("too late: already finishing")
        op.cancel("still nothing")
        assert out == []
        op.force("give up on the close")
        assert out == ["last"]
        assert op.core.close_waits[0].called

    def test_add_timeout_after_our_cancel_does_not_force(self, clock: Clock) -> None:
        # Twisted's addTimeout cancels the completion when it expires; that is
        # a defensive cancel, and the cleanup still running must not be cut.
        op = started(clock, slow_close=True)
        out = results(op.completion)
        op.cancel("user")
        op.completion.addTimeout(10, clock)
        clock.advance(10)
        assert out == [] and not op.core.close_waits[0].called
        op.core.close_waits[0].callback(None)
        error = error_of(out)
        assert isinstance(error, OperationCancelled) and not error.forced

    def test_the_cleanup_grace_forces(self, clock: Clock) -> None:
        op = download_factory()(Core(slow_close=True), clock=clock, grace=5)
        op.inputs.start()
        out = results(op.completion)
        op.cancel("user")
        clock.advance(4.9)
        assert out == []
        clock.advance(0.1)
        error = error_of(out)
        assert isinstance(error, OperationCancelled) and error.forced
        assert op.core.close_waits[0].called and clock.getDelayedCalls() == []

    def test_the_grace_counts_from_winding_down(self, clock: Clock) -> None:
        op = download_factory()(Core(slow_close=True), clock=clock, grace=5)
        op.inputs.start()
        out = results(op.completion)
        clock.advance(29.5)  # running: only the machine's own 30 s timer is armed
        assert op.state == "receiving" and len(clock.getDelayedCalls()) == 1
        clock.advance(0.5)  # finished: closing, then done, the close still pending
        assert op.state == "done" and out == []
        clock.advance(4.9)
        assert out == []
        clock.advance(0.1)
        assert out == [""]  # forced: the outcome decided before the close stands

    def test_no_grace_waits_forever(self, clock: Clock) -> None:
        op = download_factory()(Core(slow_close=True), clock=clock, grace=None)
        op.inputs.start()
        out = results(op.completion)
        op.cancel()
        assert clock.getDelayedCalls() == []
        clock.advance(1e9)
        assert out == []
        op.core.close_waits[0].callback(None)
        assert len(out) == 1

    def test_the_grace_timer_is_disarmed_on_completion(self, clock: Clock) -> None:
        op = download_factory()(Core(slow_close=True), clock=clock, grace=5)
        op.inputs.start()
        results(op.completion)
        op.cancel()
        assert len(clock.getDelayedCalls()) == 1
        op.core.close_waits[0].callback(None)
        assert clock.getDelayedCalls() == []

    @pytest.mark.parametrize("grace", [-1, float("nan"), float("inf"), "5s", True])
    def test_a_bad_grace_is_refused_naming_it(self, grace: Any) -> None:
        with pytest.raises((TypeError, ValueError), match=r"download: grace must be"):
            download_factory()(Core(), grace=grace)
        with pytest.raises((TypeError, ValueError), match=r"graceful: grace must be"):
            OperationBuilder(Download, Core, name="graceful", grace=grace)

    def test_observers_also_wait(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        results(op.completion)
        seen = results(op.observe())
        op.cancel()
        assert seen == []
        op.core.close_waits[0].callback(None)
        assert len(seen) == 1


class TestCleanupErrors:
    """
    Rule 5: errors in cleanup are reported through the completion and
    logged; the other resources are still released.
    """

    def test_release_error_attached_to_cancellation(self, clock: Clock) -> None:
        with capture_logs() as logs:
            op = started(clock, fail_release={"buffer"})
            out = results(op.completion)
            op.cancel()
        assert op.core.released == ["buffer", "request", "connection"]
        assert op.state == "done"
        error = error_of(out)
        assert isinstance(error, OperationCancelled)
        [cleanup] = error.cleanup_errors
        assert cleanup.check(RuntimeError) and "buffer" in str(cleanup.value)
        assert "1 cleanup error" in str(error)
        errors = [e for e in logs if e["event"] == "cleanup error"]
        assert errors and errors[0]["resource"] == "buffer" and errors[0]["log_level"] == "error"

    def test_release_error_after_success_carries_both(self, clock: Clock) -> None:
        op = started(clock, fail_release={"request", "connection"})
        out = results(op.completion)
        op.core.calls[0].callback("last")
        error = error_of(out)
        assert isinstance(error, CleanupFailed)
        assert error.outcome == "last"
        assert sorted(str(e.value) for e in error.errors) == [
            "close failed",
            "release of request failed",
        ]

    def test_async_release_failure_reported(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        out = results(op.completion)
        op.cancel()
        op.core.close_waits[0].errback(OSError("close timed out"))
        error = error_of(out)
        assert isinstance(error, OperationCancelled)
        assert [e.type for e in error.cleanup_errors] == [OSError]

    def test_error_in_behaviour_failure_path_and_release(self, clock: Clock) -> None:
        op = started(clock, fail_release={"request"})
        out = results(op.completion)
        op.core.raise_in.add("finished")
        op.inputs.finished()
        error = error_of(out)
        assert isinstance(error, CleanupFailed)
        assert isinstance(error.outcome, Failure) and error.outcome.check(KeyError)


class TestErrorsInBehaviours:
    """
    Rule 6: a behaviour that raises fails the operation, with everything
    released.
    """

    def test_raise_releases_new_and_old_resources(self, clock: Clock) -> None:
        op = download_factory()(Core(raise_in={"start"}), clock=clock)
        out = results(op.completion)
        op.inputs.start()  # does not raise to the caller
        assert op.core.released == ["half-acquired"]
        assert isinstance(out[0], Failure) and out[0].check(ValueError)
        assert op.done

    def test_raise_while_leaving_a_state(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        op.core.raise_in.add("finished")
        op.inputs.finished()
        assert op.core.released == ["buffer", "request"]
        assert clock.getDelayedCalls() == []
        assert isinstance(out[0], Failure) and out[0].check(KeyError)
        with pytest.raises(UnexpectedInput, match="'chunk' arrived after the operation completed"):
            op.inputs.chunk("late")

    def test_unhandled_watched_failure_fails_the_operation(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        op.core.calls[0].errback(TimeoutError("upstream"))
        assert isinstance(out[0], Failure) and out[0].check(TimeoutError)
        assert op.core.released == ["buffer", "request"]


class TestUnexpectedInputs:
    """
    Rule 7: an input the state does not accept raises an error naming the
    operation, state and input, and changes nothing.
    """

    def test_named_error(self, clock: Clock) -> None:
        op = download_factory()(Core(), clock=clock)
        with pytest.raises(UnexpectedInput) as caught:
            op.inputs.chunk("x")
        error = caught.value
        assert error.operation == op.name and error.state == "idle" and error.input == "chunk"
        assert "download#" in str(error) and "'chunk'" in str(error) and "'idle'" in str(error)
        assert op.state == "idle" and not op.done
        op.inputs.start()
        assert op.state == "receiving"

    def test_after_completion(self, clock: Clock) -> None:
        op = started(clock)
        results(op.completion)
        op.cancel()
        with pytest.raises(UnexpectedInput, match="'start'"):
            op.inputs.start()

    def test_log_and_ignore(self, clock: Clock) -> None:
        with capture_logs() as logs:
            op = download_factory(unexpected="log")(Core(), clock=clock)
            op.inputs.chunk("from a peer")  # logged, not raised
        assert op.state == "idle"
        [event] = [e for e in logs if e["event"] == "unexpected input ignored"]
        assert event["input"] == "chunk" and event["state"] == "idle"

    def test_input_returning_a_value(self, clock: Clock) -> None:
        op = started(clock)
        assert op.inputs.peek() == "peeked"


class TestReentrancy:
    """
    Rule 8: inputs fed during a transition are queued and run after it.
    """

    def test_queued_input_runs_after(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        op.core.calls[0].callback("a")
        op.inputs.chunk("last")  # its behaviour feeds finished(), which queues
        assert op.core.received == ["a", "last"]
        assert out == ["alast"]

    def test_order_is_preserved(self, clock: Clock) -> None:
        class Seq(Cancellable, Protocol):
            def go(self) -> None: ...
            def note(self, n: int) -> None: ...

        notes: list[str] = []
        b = OperationBuilder(Seq, object, name="seq")
        s = b.state("s")
        end = b.terminal_state("end")

        @s.upon(Seq.go).loop()
        def go(inputs: Seq, op: Operation[Seq, object]) -> None:
            inputs.note(1)
            inputs.note(2)
            notes.append("go done")

        @s.upon(Seq.note).loop()
        def note(inputs: Seq, op: Operation[Seq, object], n: int) -> None:
            notes.append(f"note {n}")

        s.upon(Seq.cancel).to(end).returns(None)
        op = b.build()(object(), clock=clock)
        op.inputs.go()
        assert notes == ["go done", "note 1", "note 2"]

    def test_value_returning_input_cannot_be_queued(self, clock: Clock) -> None:
        class Ask(Cancellable, Protocol):
            def go(self) -> None: ...
            def ask(self) -> int: ...

        errors: list[Exception] = []
        b = OperationBuilder(Ask, object, name="ask")
        s = b.state("s")
        end = b.terminal_state("end")

        @s.upon(Ask.go).loop()
        def go(inputs: Ask, op: Operation[Ask, object]) -> None:
            try:
                inputs.ask()
            except ReentrantInputError as e:
                errors.append(e)

        s.upon(Ask.ask).loop().returns(1)
        s.upon(Ask.cancel).to(end).returns(None)
        op = b.build()(object(), clock=clock)
        op.inputs.go()
        assert "ask" in str(errors[0]) and "ask#" in str(errors[0])
        assert op.inputs.ask() == 1

    def test_input_fed_from_a_release_is_queued(self, clock: Clock) -> None:
        class Hop(Cancellable, Protocol):
            def go(self) -> None: ...
            def note(self, text: str) -> None: ...

        notes: list[str] = []
        b = OperationBuilder(Hop, object, name="hop")
        a, z = b.state("a"), b.state("z")
        end = b.terminal_state("end")

        @a.upon(Hop.go).to(z)
        def go(inputs: Hop, op: Operation[Hop, object]) -> None:
            notes.append("go")

        @z.upon(Hop.note).loop()
        def note(inputs: Hop, op: Operation[Hop, object], text: str) -> None:
            notes.append(f"{text} in {op.state}")

        a.upon(Hop.cancel).to(end).returns(None)
        z.upon(Hop.cancel).to(end).returns(None)
        op = b.build()(object(), clock=clock)
        op.own(object(), lambda _: op.inputs.note("from release"))
        op.inputs.go()
        assert notes == ["go", "from release in z"]

    def test_queued_unexpected_input_fails_the_operation(self, clock: Clock) -> None:
        class Bad(Cancellable, Protocol):
            def go(self) -> None: ...
            def stray(self) -> None: ...

        b = OperationBuilder(Bad, object, name="bad")
        s = b.state("s")
        end = b.terminal_state("end")

        @s.upon(Bad.go).loop()
        def go(inputs: Bad, op: Operation[Bad, object]) -> None:
            inputs.stray()  # no state accepts it: a bug in the machine

        s.upon(Bad.cancel).to(end).returns(None)
        op = b.build()(object(), clock=clock)
        out = results(op.completion)
        op.inputs.go()  # the caller is not the one at fault: no raise
        assert isinstance(out[0], Failure) and out[0].check(UnexpectedInput)
        assert "fed from inside a transition" in str(out[0].value)
        assert "'stray'" in str(out[0].value) and "bad#" in str(out[0].value)

    def test_cancel_from_inside_a_behaviour(self, clock: Clock) -> None:
        class Self(Cancellable, Protocol):
            def go(self) -> None: ...

        b = OperationBuilder(Self, object, name="self")
        s = b.state("s")
        end = b.terminal_state("end")

        @s.upon(Self.go).loop()
        def go(inputs: Self, op: Operation[Self, object]) -> None:
            op.completion.cancel()
            assert op.state == "s"  # queued, not nested

        s.upon(Self.cancel).to(end).returns(None)
        op = b.build()(object(), clock=clock)
        out = results(op.completion)
        op.inputs.go()
        assert op.state == "end"
        assert isinstance(out[0], Failure) and out[0].check(OperationCancelled)


class Parent(Cancellable, Protocol):
    def start(self) -> None: ...
    def child_done(self, result: object) -> None: ...
    def child_failed(self, failure: Failure) -> None: ...


class Child(Cancellable, Protocol):
    def finish(self) -> None: ...
    def closed(self) -> None: ...


def child_factory() -> OperationFactory[Child, Core]:
    b = OperationBuilder(Child, Core, name="child")
    working = b.state("working")
    closing = b.cleanup_state("closing")
    done = b.terminal_state("done")

    @working.upon(Child.cancel).to(closing)
    def cancelled(inputs: Child, op: Operation[Child, Core], reason: str | None = None) -> None:
        def close(_: object) -> Deferred[None]:
            wait: Deferred[None] = Deferred()
            op.core.close_waits.append(wait)
            return wait

        tracked(op, "child resource")
        op.own(object(), close, name="child socket")
        inputs.closed()

    @working.upon(Child.finish).to(done)
    def finish(inputs: Child, op: Operation[Child, Core]) -> None:
        op.succeed("child result")

    closing.upon(Child.closed).to(done).returns(None)
    return b.build()


class TestNestedOperations:
    """
    Rule 9: a child owned by a state is cancelled with it; its failure can
    be delivered to the parent as an input.
    """

    def parent(self, clock: Clock, children: list[Operation[Child, Core]]) -> Op:
        make_child = child_factory()
        b = OperationBuilder(Parent, Core, name="parent")
        idle = b.state("idle")
        waiting = b.state("waiting", resources=["child"])
        done = b.terminal_state("done")

        @idle.upon(Parent.start).to(waiting)
        def start(inputs: Parent, op: Operation[Parent, Core]) -> None:
            child = make_child(Core(), clock=op.clock)
            children.append(child)
            op.watch(child, inputs.child_done, inputs.child_failed)

        @waiting.upon(Parent.child_done).to(done)
        def child_done(inputs: Parent, op: Operation[Parent, Core], result: object) -> None:
            op.succeed(result)

        @waiting.upon(Parent.child_failed).to(done)
        def child_failed(inputs: Parent, op: Operation[Parent, Core], failure: Failure) -> None:
            op.fail(failure)

        idle.upon(Parent.cancel).to(done).returns(None)
        waiting.upon(Parent.cancel).to(done).returns(None)
        factory = b.build()
        op = factory(Core(), clock=clock)
        return op  # type: ignore[return-value]

    def test_parent_cancel_cancels_child_and_waits(self, clock: Clock) -> None:
        children: list[Operation[Child, Core]] = []
        op = self.parent(clock, children)
        op.inputs.start()
        out = results(op.completion)
        op.cancel("user")
        [child] = children
        assert child.state == "done" and not child.done  # waiting for its socket
        assert out == []
        child.core.close_waits[0].callback(None)
        assert child.done
        error = error_of(out)
        assert isinstance(error, OperationCancelled) and error.reason == "user"
        assert child.core.released == ["child resource"]
        assert len(child.core.close_waits) == 1

    def test_child_result_reaches_parent(self, clock: Clock) -> None:
        children: list[Operation[Child, Core]] = []
        op = self.parent(clock, children)
        op.inputs.start()
        out = results(op.completion)
        children[0].inputs.finish()
        assert out == ["child result"]

    def test_child_failure_is_a_parent_input(self, clock: Clock) -> None:
        children: list[Operation[Child, Core]] = []
        op = self.parent(clock, children)
        op.inputs.start()
        out = results(op.completion)
        children[0].cancel("child's own reason")
        children[0].core.close_waits[0].callback(None)
        error = error_of(out)
        assert isinstance(error, OperationCancelled) and error.reason == "child's own reason"
        assert error.operation == children[0].name

    def test_child_cleanup_errors_reach_parent(self, clock: Clock) -> None:
        children: list[Operation[Child, Core]] = []
        op = self.parent(clock, children)
        op.inputs.start()
        children[0].core.fail_release.add("child resource")
        out = results(op.completion)
        op.cancel()
        children[0].core.close_waits[0].callback(None)
        error = error_of(out)
        assert isinstance(error, OperationCancelled)
        assert [str(e.value) for e in error.cleanup_errors] == ["release of child resource failed"]


class TestTwistedSemantics:
    """
    Rule 10: the examples of seed 000 (Part 19) behave the same when the
    Deferred is an operation's completion.
    """

    def test_cancel_unfired_errbacks_with_cancelled_error(self, clock: Clock) -> None:
        op = started(clock)
        out: list[str] = []
        op.completion.addCallbacks(
            lambda r: out.append("callback"), lambda f: out.append(f"errback {f.type.__name__}")
        )
        op.completion.cancel()
        assert out == ["errback OperationCancelled"]

    def test_fire_then_cancel_has_no_effect(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        op.core.calls[0].callback("last")
        op.completion.cancel()
        assert out == ["last"]

    def test_result_after_cancel_is_ignored(self, clock: Clock) -> None:
        op = started(clock)
        call = op.core.calls[0]
        out = results(op.completion)
        op.completion.cancel()
        assert call.called  # fsmcancel cancelled it; a late fire is swallowed by Twisted
        assert len(out) == 1

    def test_cancel_paused_completion_goes_to_inner(self, clock: Clock) -> None:
        op = started(clock)
        inner_cancelled: list[bool] = []
        inner: Deferred[str] = Deferred(lambda d: inner_cancelled.append(True))
        op.completion.addCallback(lambda r: inner)
        out = results(op.completion)
        op.core.calls[0].callback("last")
        assert out == [] and op.done
        op.completion.cancel()
        assert inner_cancelled == [True]
        assert isinstance(out[0], Failure) and out[0].check(CancelledError)

    def test_cancel_twice_and_after_never_raises(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        out = results(op.completion)
        for _ in range(3):
            op.completion.cancel()
            op.cancel()
        assert not op.done and out == []  # polite: still waiting for the close
        op.force()
        for _ in range(3):
            op.completion.cancel()
            op.cancel()
            op.force()
        assert op.done and len(out) == 1

    def test_no_unhandled_errors(self, clock: Clock) -> None:
        from twisted.logger import ILogObserver, globalLogPublisher

        seen: list[dict[str, Any]] = []
        gc.collect()  # earlier tests' unhandled failures are theirs, not ours
        observer = cast(ILogObserver, seen.append)
        globalLogPublisher.addObserver(observer)
        try:
            for how in ("cancel", "fail", "succeed"):
                op = started(clock)
                op.completion.addErrback(lambda f: None)
                if how == "cancel":
                    op.cancel()
                elif how == "fail":
                    op.core.calls[0].errback(OSError())
                else:
                    op.core.calls[0].callback("last")
                del op
            gc.collect()
        finally:
            globalLogPublisher.removeObserver(observer)
        assert [e for e in seen if e.get("isError") or "log_failure" in e] == []


class TestWhoCancelled:
    """
    Rule 11: the reason and the state where the cancel was recognised are
    in the error and in the logs.
    """

    def test_reason_and_state(self, clock: Clock) -> None:
        with capture_logs() as logs:
            op = started(clock)
            out = results(op.completion)
            op.cancel("client hung up")
        error = error_of(out)
        assert isinstance(error, OperationCancelled)
        assert error.reason == "client hung up" and error.state == "receiving"
        assert "client hung up" in str(error) and "'receiving'" in str(error)
        [cancel] = [e for e in logs if e["event"] == "cancel"]
        assert cancel["reason"] == "client hung up" and cancel["state"] == "receiving"
        [completed] = [e for e in logs if e["event"] == "completed"]
        assert completed["outcome"] == "cancelled"


class TestTimeAndIntrospection:
    """
    Rule 12 and the introspection surface.
    """

    def test_time_in_state_uses_the_clock(self, clock: Clock) -> None:
        op = started(clock)
        clock.advance(2.5)
        assert op.time_in_state == 2.5
        assert op.describe()["seconds_in_state"] == 2.5

    def test_default_clock_is_the_reactor(self) -> None:
        from twisted.internet import reactor

        op = download_factory()(Core())
        assert op.clock is reactor

    def test_transition_events(self, clock: Clock) -> None:
        with capture_logs() as logs:
            op = started(clock)
            clock.advance(1.5)
            op.core.calls[0].callback("last")
        transitions = [e for e in logs if e["event"] == "transition"]
        # Every transition, loops included, with the time spent in `old`.
        assert [(e["old"], e["input"], e["new"]) for e in transitions] == [
            ("idle", "start", "receiving"),
            ("receiving", "chunk", "receiving"),
            ("receiving", "finished", "closing"),
            ("closing", "closed", "done"),
        ]
        assert transitions[1]["seconds"] == 1.5
        assert transitions[2]["seconds"] == 1.5  # a loop does not leave the state
        assert {e["op"] for e in logs} == {op.id}
        assert all(e["machine"] == "download" for e in transitions)
        releases = [(e["resource"], e["state"]) for e in logs if e["event"] == "release"]
        assert releases == [  # each named with the state that owned it
            ("DelayedCall", "receiving"),
            ("buffer", "receiving"),
            ("request", "receiving"),
            ("connection", "closing"),
        ]
        assert [e["event"] for e in logs][-1] == "completed"

    def test_no_debug_events_when_filtered(self, clock: Clock) -> None:
        import logging

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
        try:
            with capture_logs() as logs:
                op = started(clock)
                op.core.calls[0].callback("last")
            assert [e for e in logs if e["log_level"] == "debug"] == []
        finally:
            structlog.reset_defaults()

    def test_history_is_off_unless_asked_and_bounded(self, clock: Clock) -> None:
        op = download_factory()(Core(), clock=clock, registry=Registry())
        op.inputs.start()
        assert op.history == ()
        op = download_factory()(Core(), clock=clock, registry=Registry(history=2))
        op.inputs.start()
        clock.advance(1.0)
        op.inputs.chunk("a")
        clock.advance(1.0)
        op.inputs.peek()
        # Loops are transitions too; only the last two are kept, oldest first.
        assert [(r.old, r.input, r.new, r.at) for r in op.history] == [
            ("receiving", "chunk", "receiving", 1.0),
            ("receiving", "peek", "receiving", 2.0),
        ]

    def test_registry_history_must_be_a_count(self) -> None:
        with pytest.raises(ValueError, match="history"):
            Registry(history=-1)

    def test_force_stops_waiting_for_cleanup(self, clock: Clock) -> None:
        op = started(clock, slow_close=True)
        out = results(op.completion)
        op.force("shutdown grace expired")
        error = error_of(out)
        assert isinstance(error, OperationCancelled) and error.forced
        assert error.reason == "shutdown grace expired"
        assert op.done and op.resources == ()

    def test_registry_is_weak_and_empties(self, clock: Clock) -> None:
        registry = Registry()
        factory = download_factory()
        ops = [factory(Core(), clock=clock, registry=registry) for _ in range(3)]
        assert len(registry) == 3
        ops[0].inputs.start()
        results(ops[0].completion)
        ops[0].cancel()
        assert [d["id"] for d in registry.describe()] == [ops[1].id, ops[2].id]
        del ops[1]
        gc.collect()
        assert len(registry) == 1
        assert registry.operations()[0].state == "idle"


def test_succeed_and_fail_after_completion_are_refused(clock: Clock) -> None:
    op = started(clock)
    results(op.completion)
    op.cancel()
    with pytest.raises(RuntimeError, match="already completed"):
        op.succeed(1)


def test_watch_accepts_an_already_fired_deferred(clock: Clock) -> None:
    op = started(clock)
    out = results(op.completion)
    op.watch(succeed("last"), op.inputs.chunk)
    assert out == ["last"]


class TestBadInput:
    """
    A caller's mistake is raised to the caller, naming the operation, state
    and input, and the operation loses nothing.
    """

    def test_wrong_arguments_do_not_fail_the_operation(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        with pytest.raises(TypeError, match=r"download#\d+: input 'chunk' in state 'receiving'"):
            op.inputs.chunk()  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="unexpected keyword argument 'size'"):
            op.inputs.chunk("x", size=3)  # type: ignore[call-arg]
        assert out == [] and op.state == "receiving"
        op.core.calls[0].callback("last")
        assert out == ["last"]

    def test_keyword_arguments_are_fine(self, clock: Clock) -> None:
        op = started(clock)
        out = results(op.completion)
        op.core.calls[0].callback("a")
        op.inputs.chunk(data="last")
        assert out == ["alast"]

    def test_unknown_input_names_the_operation_and_lists_inputs(self, clock: Clock) -> None:
        op = started(clock)
        with pytest.raises(
            AttributeError,
            match=r"download#\d+: no input 'chunks' \(in state 'receiving'\); "
            r"its inputs are: cancel, chunk, closed, finished, peek, start",
        ):
            op.inputs.chunks("x")  # type: ignore[attr-defined]
        results(op.completion)
        op.cancel()
