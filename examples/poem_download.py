"""
One download of a poem from the upstream poetry server: the
``poem-download`` machine that ``examples.poetry_proxy`` shares among the
clients waiting for the poem.

``connecting`` owns the connect attempt and ``receiving`` owns the upstream
connection, so cancelling the download aborts whichever is live.  Both are
guarded by ``fsmcancel.timeouts`` (default ``examples/proxy_timeouts.toml``):
the connect by a deadline (a connect shows no progress), the poem by the
silence before its first byte and between two chunks, never by its length.
So an upstream that accepts and never sends, or stops half-way, is given up
with an `UpstreamError` saying so, its connection aborted; a slow one that
keeps sending is never cut.  The protocol is the seed's: the server sends
the poem as soon as a client connects, then closes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from fsmcancel import Cancellable, Operation, OperationBuilder
from fsmcancel.timeouts import GuardedCall, TimedOut, Timeouts

DEFAULT_TIMEOUTS = Path(__file__).with_name("proxy_timeouts.toml")
CONNECT = "connect"
POEM = "poem"


def transport_of(p: protocol.Protocol) -> Any:
    """
    ``p.transport``, untyped: Twisted's interfaces do not type-check as
    classes without the zope plugin.
    """
    return p.transport


class Connector(Protocol):
    """
    What a download needs of the upstream address: an
    ``IStreamClientEndpoint`` such as ``TCP4ClientEndpoint``.
    """

    def connect(self, protocolFactory: Any) -> Deferred[Any]: ...


class UpstreamError(Exception):
    """
    The upstream server did not send a whole poem.
    """


class ConnectTimedOut(UpstreamError):
    """Connecting to the upstream server took longer than its limit."""

    def __init__(self, timed_out: TimedOut) -> None:
        self.timed_out = timed_out
        super().__init__(
            f"connecting to {timed_out.peer} timed out after {timed_out.waited:.2f}s "
            f"({timed_out.rule} limit {timed_out.limit:.2f}s)"
        )


class PoemDownload(Cancellable, Protocol):
    def start(self) -> None: ...
    def connected(self, client: PoetryClient) -> None: ...
    def connect_failed(self, reason: Failure) -> None: ...
    def downloaded(self, poem: bytes) -> None: ...
    def download_failed(self, reason: Failure) -> None: ...
    def stalled(self, timed_out: TimedOut) -> None: ...


@dataclass
class Upstream:
    endpoint: Connector
    address: str
    timeouts: Timeouts


DownloadOp = Operation[PoemDownload, Upstream]


class PoetryClient(protocol.Protocol):
    """
    Collects the poem: ``finished`` fires with it when the upstream closes
    the connection, or fails if it sent nothing or was lost; each chunk is
    a sign of life for ``progress``.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.chunks: list[bytes] = []
        self.finished: Deferred[bytes] = Deferred()
        self.progress: Callable[[], object] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.progress is not None:
            self.progress()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        poem = b"".join(self.chunks)
        if not poem:
            error = UpstreamError(f"{self.address} closed the connection before sending a poem")
            self.finished.errback(error)
        elif not reason.check(ConnectionDone):
            error = UpstreamError(f"lost {self.address} after {len(poem)} bytes: {reason.value}")
            self.finished.errback(error)
        else:
            self.finished.callback(poem)

    def release(self) -> None:
        """
        What the state owning the upstream connection does when it is left:
        stop reporting, and drop the connection now.
        """
        self.progress = None
        if self.transport is not None:
            transport_of(self).abortConnection()


def guard(
    op: DownloadOp,
    kind: str,
    fn: Callable[..., Deferred[Any]],
    *args: Any,
    name: str,
    on_result: Callable[[Any], object],
    on_failure: Callable[[Failure], object],
    on_timeout: Callable[[TimedOut], object],
) -> GuardedCall[Any]:
    """``fn(*args)`` as a resource ``name`` of the state, guarded by the rule for ``kind``."""
    call = op.core.timeouts.guard(
        op.clock, kind, op.core.address,
        on_result=on_result, on_failure=on_failure, on_timeout=on_timeout, end=op.release,
    )  # fmt: skip
    op.own(call, GuardedCall.cancel, name=name)
    call.start(fn, *args)
    return call


def receive_from(inputs: PoemDownload, op: DownloadOp, client: PoetryClient) -> PoetryClient:
    op.own(client, PoetryClient.release, name="upstream connection")
    call = guard(
        op, POEM, lambda: client.finished, name="poem",
        on_result=inputs.downloaded, on_failure=inputs.download_failed, on_timeout=inputs.stalled,
    )  # fmt: skip
    client.progress = call.progress
    return client


_download = OperationBuilder(
    PoemDownload, Upstream, name="poem-download", timeouts=DEFAULT_TIMEOUTS
)
download_idle = _download.state("idle")
connecting = _download.state("connecting", resources=["connect attempt"])
receiving = _download.state("receiving", receive_from, resources=["upstream connection", "poem"])
download_done = _download.terminal_state("done")
_download.timeout(PoemDownload.connect_failed, kind=CONNECT)
_download.timeout(PoemDownload.stalled, kind=POEM)


@download_idle.upon(PoemDownload.start).to(connecting)
def connect(inputs: PoemDownload, op: DownloadOp) -> None:
    address = op.core.address
    factory = protocol.Factory.forProtocol(lambda: PoetryClient(address))
    guard(
        op, CONNECT, op.core.endpoint.connect, factory, name="connect attempt",
        on_result=inputs.connected, on_failure=inputs.connect_failed,
        on_timeout=lambda timed_out: inputs.connect_failed(Failure(ConnectTimedOut(timed_out))),
    )  # fmt: skip


connecting.upon(PoemDownload.connected).to(receiving).returns(None)


@connecting.upon(PoemDownload.connect_failed).to(download_done)
def connect_failed(inputs: PoemDownload, op: DownloadOp, reason: Failure) -> None:
    op.fail(reason)


@receiving.upon(PoemDownload.downloaded).to(download_done)
def downloaded(inputs: PoemDownload, op: DownloadOp, client: PoetryClient, poem: bytes) -> None:
    op.succeed(poem)


@receiving.upon(PoemDownload.download_failed).to(download_done)
def download_failed(
    inputs: PoemDownload, op: DownloadOp, client: PoetryClient, reason: Failure
) -> None:
    op.fail(reason)


@receiving.upon(PoemDownload.stalled).to(download_done)
def stalled(
    inputs: PoemDownload, op: DownloadOp, client: PoetryClient, timed_out: TimedOut
) -> None:
    received = sum(len(chunk) for chunk in client.chunks)
    op.fail(
        UpstreamError(
            f"{op.core.address} went silent: nothing for {timed_out.limit:.2f}s "
            f"({timed_out.rule} limit) after {received} bytes"
        )
    )


download_idle.upon(PoemDownload.cancel).to(download_done).returns(None)
connecting.upon(PoemDownload.cancel).to(download_done).returns(None)
receiving.upon(PoemDownload.cancel).to(download_done).returns(None)

poem_download = _download.build()
