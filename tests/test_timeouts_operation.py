"""
A guarded call inside a real fsmcancel operation: the call is a resource of
the state that started it, a timeout is a machine input, and cancelling the
operation cancels the call without reporting anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from fsmcancel import Cancellable, Operation, OperationBuilder, OperationFactory
from fsmcancel.timeouts import TimedOut, Timeouts, load_config


class Fetch(Cancellable, Protocol):
    def start(self, peers: list[str]) -> None: ...
    def answered(self, data: str) -> None: ...
    def failed(self, failure: Failure) -> None: ...
    def timed_out(self, timed_out: TimedOut) -> None: ...


@dataclass
class Core:
    timeouts: Timeouts
    requests: dict[str, Deferred[str]] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    timeouts_seen: list[TimedOut] = field(default_factory=list)


Op = Operation[Fetch, Core]


def request(core: Core, peer: str) -> Deferred[str]:
    d: Deferred[str] = Deferred(lambda _: core.cancelled.append(peer))
    core.requests[peer] = d
    return d


def start_call(inputs: Fetch, op: Op) -> None:
    peer = op.core.peers.pop(0)
    op.core.timeouts.call(
        op,
        request,
        op.core,
        peer,
        kind="fetch",
        peer=peer,
        on_result=inputs.answered,
        on_failure=inputs.failed,
        on_timeout=inputs.timed_out,
    )


def factory() -> OperationFactory[Fetch, Core]:
    b = OperationBuilder(Fetch, Core, name="fetch")
    idle = b.state("idle")
    waiting = b.state("waiting", resources=["fetch call"])
    done = b.terminal_state("done")
    b.timeout(Fetch.timed_out, "fetch")

    @idle.upon(Fetch.start).to(waiting)
    def start(inputs: Fetch, op: Op, peers: list[str]) -> None:
        op.core.peers = list(peers)
        start_call(inputs, op)

    @waiting.upon(Fetch.timed_out).loop()
    def retry(inputs: Fetch, op: Op, timed_out: TimedOut) -> None:
        op.core.timeouts_seen.append(timed_out)
        if op.core.peers:
            start_call(inputs, op)  # retry on another peer
        else:
            op.fail(TimeoutError(f"{timed_out.kind}: every peer stalled"))
            inputs.cancel()

    @waiting.upon(Fetch.answered).to(done)
    def answered(inputs: Fetch, op: Op, data: str) -> None:
        op.succeed(data)

    @waiting.upon(Fetch.failed).to(done)
    def failed(inputs: Fetch, op: Op, failure: Failure) -> None:
        op.fail(failure)

    waiting.upon(Fetch.cancel).to(done).returns(None)
    idle.upon(Fetch.cancel).to(done).returns(None)
    return b.build()


def results(d: Deferred[Any]) -> list[object]:
    out: list[object] = []
    d.addBoth(out.append)
    return out


def test_timeout_retries_on_another_peer() -> None:
    clock = Clock()
    op = factory()(Core(Timeouts(load_config(env={}))), clock=clock)
    outcome = results(op.completion)
    op.inputs.start(["a", "b"])
    assert op.resources == ("fetch call to a",)
    clock.advance(3.0)  # cold start: idle.initial, 3 s
    assert op.core.cancelled == ["a"]
    assert [t.peer for t in op.core.timeouts_seen] == ["a"]
    assert op.resources == ("fetch call to b",)
    op.core.requests["b"].callback("payload")
    assert outcome == ["payload"]
    assert clock.getDelayedCalls() == []


def test_cancel_releases_the_call_silently() -> None:
    clock = Clock()
    op = factory()(Core(Timeouts(load_config(env={}))), clock=clock)
    outcome = results(op.completion)
    op.inputs.start(["a"])
    clock.advance(1.0)
    op.cancel()
    assert op.core.cancelled == ["a"]
    clock.advance(100)
    assert op.core.timeouts_seen == []
    assert clock.getDelayedCalls() == []
    assert len(outcome) == 1 and isinstance(outcome[0], Failure)
