"""
Poetry Proxy 3.0 (seed, Part 19), with each request an fsmcancel operation.

    python -m examples.slow_poetry_server --port 10001 examples/poems/raven.txt
    python -m examples.poetry_proxy --port 10000 --upstream 127.0.0.1:10001 [--inspect 8080]
    nc 127.0.0.1 10000          # hang up with Ctrl-C before the poem arrives

The protocol is the seed's: the upstream server sends a poem as soon as a
client connects, then closes; the proxy sends the whole poem to its client,
then closes.  A poem downloaded completely is cached, and later clients get
the cached copy at once.

Two machines (``fsmcancel diagram examples.poetry_proxy`` draws them):

``poem_download`` (`examples.poem_download`) -- one download from the
upstream server, its connect and its poem guarded by ``fsmcancel.timeouts``
(``--timeouts FILE``, default ``examples/proxy_timeouts.toml``).  An upstream
that accepts and never sends, or stops half-way, is given up: the download
fails saying so, the upstream connection is aborted and every waiting client
is closed without a poem.  A slow upstream that keeps sending is never cut.

``proxy_request`` -- one client of the proxy.  ``waiting`` owns the client
connection, a *subscription* to the shared download and the Deferred
(``download.observe()``) the poem will arrive on.  When the client hangs up
there, the request is cancelled (``op.cancel("client hung up")``, the seed's
``deferred.cancel()``), and leaving ``waiting`` releases the subscription.

Sharing: until the poem is cached, every waiting request subscribes to the
same download (``ProxyService.subscribe``).  A subscription's release drops
one unit of interest; only the last one cancels the download, which aborts
the upstream connection within the same reactor turn.  So one client hanging
up leaves the others' download alone, and the last one hanging up stops it.

Shutdown: the requests are tracked by an ``OperationService`` in the
program's ``MultiService``, so stopping the reactor (Ctrl-C, SIGTERM)
cancels each one ("service stopping") and waits for its cleanup; through
the subscriptions that cancels the download and closes the upstream
connection, before the process exits.  ``--inspect PORT`` serves the live
inspector page on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from twisted.internet import protocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.python.failure import Failure

from examples.poem_download import (
    DEFAULT_TIMEOUTS,
    Connector,
    DownloadOp,
    PoetryClient,
    Upstream,
    UpstreamError,
    poem_download,
    transport_of,
)
from fsmcancel import (
    Cancellable,
    Operation,
    OperationBuilder,
    OperationCancelled,
    OperationService,
    Registry,
)
from fsmcancel.timeouts import Timeouts, load_config

__all__ = [
    "PoetryClient",
    "PoetryProxyProtocol",
    "ProxyService",
    "UpstreamError",
    "main",
    "poem_download",
    "proxy_request",
]

log = structlog.get_logger("poetry_proxy")


# -- sharing one download among the clients waiting for it -------------------


@dataclass(eq=False)
class SharedDownload:
    op: DownloadOp
    subscribers: int = 0


class Subscription:
    """
    One client's interest in the poem; a waiting ``proxy_request`` owns it.

    ``poem`` fires with the poem (or the download's failure).  Releasing the
    subscription drops the interest; the last release cancels the download.
    """

    def __init__(self, poem: Deferred[Any], shared: SharedDownload | None = None) -> None:
        self.poem = poem
        self.shared = shared

    def release(self) -> Deferred[None] | None:
        shared, self.shared = self.shared, None
        if shared is None:  # a cached poem, or already released
            return None
        shared.subscribers -= 1
        download = shared.op
        if shared.subscribers > 0 or download.done:
            log.info("left download", download=download.name, subscribers=shared.subscribers)
            return None
        log.info("last subscriber left: cancelling download", download=download.name)
        download.cancel("its last subscriber left")
        # Done when the download has released the upstream connection.  Its
        # outcome is the service's business (and is in its own log events).
        return download.observe().addBoth(_nothing)


def _nothing(result: object) -> None:
    return None


class ProxyService:
    """
    The seed's ``ProxyService``: the cache, the shared download, and the live
    requests.

    ``requests`` tracks the requests for shutdown: stopping it cancels each
    one, and so, through their subscriptions, the download (which is why
    downloads need no tracking of their own).  ``registry`` lists every live
    operation, downloads included, with its last transitions, for the
    inspector page.
    """

    def __init__(
        self,
        endpoint: Connector,
        upstream: str,
        clock: Any | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.upstream = upstream
        self.clock = clock
        self.timeouts = timeouts or Timeouts(load_config(DEFAULT_TIMEOUTS))
        self.poem: bytes | None = None
        self.current: SharedDownload | None = None
        self.requests = OperationService(clock=clock)
        self.registry = Registry(history=20)

    def serve(self, client: PoetryProxyProtocol) -> RequestOp:
        """
        Start the request of a client that just connected.
        """
        op = proxy_request(Request(self, client), clock=self.clock, registry=self.registry)
        # fsmcancel has logged how it ended (the "completed" event); nobody
        # else waits for a request.
        op.completion.addErrback(_nothing)
        op.inputs.start()
        # Once the proxy is stopping, this cancels it at once.
        return self.requests.track(op)

    def subscribe(self, client: str) -> Subscription:
        """
        The poem for ``client``: the cached one, or a share in the download.
        """
        if self.poem is not None:
            log.info("sending cached poem", client=client)
            return Subscription(succeed(self.poem))
        shared = self.current
        # A download whose last subscriber has left is finishing: not joined.
        if shared is None or shared.op.done or shared.subscribers == 0:
            shared = self.current = self._start_download()
        shared.subscribers += 1
        log.info(
            "subscribed", client=client, download=shared.op.name, subscribers=shared.subscribers
        )
        return Subscription(shared.op.observe(), shared)

    def _start_download(self) -> SharedDownload:
        op = poem_download(
            Upstream(self.endpoint, self.upstream, self.timeouts),
            clock=self.clock,
            registry=self.registry,
        )
        shared = SharedDownload(op)
        log.info("fetching poem from upstream", upstream=self.upstream, download=op.name)
        op.completion.addBoth(self._download_finished, shared)
        op.inputs.start()
        return shared

    def _download_finished(self, result: object, shared: SharedDownload) -> None:
        if self.current is shared:
            self.current = None
        if isinstance(result, bytes):
            self.poem = result
            log.info("poem cached", download=shared.op.name, bytes=len(result))
        elif isinstance(result, Failure) and not result.check(OperationCancelled):
            log.warning(
                "upstream failed",
                upstream=self.upstream,
                download=shared.op.name,
                error=result.value,
            )


# -- one client of the proxy ---------------------------------------------------


class ProxyRequest(Cancellable, Protocol):
    def start(self) -> None: ...
    def poem_ready(self, poem: bytes) -> None: ...
    def poem_failed(self, reason: Failure) -> None: ...
    def client_closed(self, reason: Failure) -> None: ...


class PoetryProxyProtocol(protocol.Protocol):
    """
    A client of the proxy.  What its hang-up means is set by the state that
    owns the connection (``on_lost``); the release detaches and aborts.
    """

    def __init__(self, service: ProxyService) -> None:
        self.service = service
        self.peer = "?"
        self.on_lost: Callable[[Failure], object] | None = None

    def connectionMade(self) -> None:
        peer = transport_of(self).getPeer()
        self.peer = f"{peer.host}:{peer.port}"
        self.service.serve(self)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(reason)

    def release(self) -> None:
        self.on_lost = None
        if self.transport is not None:
            transport_of(self).abortConnection()


@dataclass
class Request:
    service: ProxyService
    client: PoetryProxyProtocol


RequestOp = Operation[ProxyRequest, Request]

_request = OperationBuilder(ProxyRequest, Request, name="proxy-request")
request_idle = _request.state("idle")
waiting = _request.state("waiting", resources=["client connection", "subscription", "poem"])
closing = _request.cleanup_state("closing", resources=["client connection"])
request_done = _request.terminal_state("done")


@request_idle.upon(ProxyRequest.start).to(waiting)
def subscribe(inputs: ProxyRequest, op: RequestOp) -> None:
    client = op.own(op.core.client, PoetryProxyProtocol.release, name="client connection")
    # Nobody wants the poem any more: the seed's deferred.cancel().
    client.on_lost = lambda reason: op.cancel("client hung up")
    subscription = op.own(
        op.core.service.subscribe(client.peer), Subscription.release, name="subscription"
    )
    op.watch(subscription.poem, inputs.poem_ready, inputs.poem_failed, name="poem")


def _close_client(inputs: ProxyRequest, op: RequestOp, poem: bytes = b"") -> None:
    """
    Move the client connection to ``closing``, whose end is the client's
    close (a forced cancel there still aborts it).
    """
    client = op.hand_over(op.core.client)
    client.on_lost = inputs.client_closed
    transport = transport_of(client)
    if poem:
        transport.write(poem)
    transport.loseConnection()


@waiting.upon(ProxyRequest.poem_ready).to(closing)
def send_poem(inputs: ProxyRequest, op: RequestOp, poem: bytes) -> None:
    _close_client(inputs, op, poem)
    op.succeed(len(poem))
    log.info("poem sent", client=op.core.client.peer, bytes=len(poem))


@waiting.upon(ProxyRequest.poem_failed).to(closing)
def close_without_poem(inputs: ProxyRequest, op: RequestOp, reason: Failure) -> None:
    _close_client(inputs, op)
    op.fail(reason)
    log.warning("closing client without a poem", client=op.core.client.peer, error=reason.value)


closing.upon(ProxyRequest.client_closed).to(request_done).returns(None)
request_idle.upon(ProxyRequest.cancel).to(request_done).returns(None)
waiting.upon(ProxyRequest.cancel).to(request_done).returns(None)

proxy_request = _request.build()


# -- the program ----------------------------------------------------------------

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def parse_upstream(text: str) -> tuple[str, int]:
    """
    ``HOST:PORT``, or just ``PORT`` on 127.0.0.1 as in the seed.
    """
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.poetry_proxy",
        description="A caching poetry proxy whose requests are cancellable operations.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument(
        "--interface", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--upstream", required=True, metavar="HOST:PORT", help="the poetry server to proxy"
    )
    parser.add_argument("--log-level", choices=sorted(LEVELS), default="info")
    parser.add_argument(
        "--timeouts", type=Path, default=DEFAULT_TIMEOUTS, metavar="FILE",
        help=f"upstream timeouts, TOML (default: {DEFAULT_TIMEOUTS.name} next to this program)",
    )  # fmt: skip
    parser.add_argument(
        "--inspect",
        type=int,
        metavar="PORT",
        help="serve the live inspector page on 127.0.0.1:PORT (0: any free port)",
    )
    args = parser.parse_args(argv)
    try:
        args.upstream = parse_upstream(args.upstream)
    except ValueError:
        parser.error(f"--upstream must be HOST:PORT, not {args.upstream!r}")
    from examples._servers import timeouts_option  # it imports the reactor

    args.timeouts = Timeouts(timeouts_option(parser, args.timeouts))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from twisted.application.service import MultiService
    from twisted.internet import reactor as _reactor

    from examples._servers import setup_logging
    from fsmcancel.inspector import listen_inspector

    args = parse_args(argv)
    setup_logging(LEVELS[args.log_level])
    host, port = args.upstream
    reactor: Any = _reactor
    endpoint = TCP4ClientEndpoint(reactor, host, port)
    service = ProxyService(endpoint, f"{host}:{port}", timeouts=args.timeouts)
    factory = protocol.Factory.forProtocol(lambda: PoetryProxyProtocol(service))
    listening = reactor.listenTCP(args.port, factory, interface=args.interface)
    address = listening.getHost()
    print(f"listening on {address.host}:{address.port}", flush=True)
    if args.inspect is not None:
        inspector: Any = listen_inspector(service.registry, args.inspect).getHost()
        print(f"inspector on http://{inspector.host}:{inspector.port}/", flush=True)
    # Ctrl-C or SIGTERM stops the reactor; before it shuts down, the
    # application stops, cancelling every request and waiting for each
    # cleanup (forced after the grace period).
    application = MultiService()
    service.requests.setServiceParent(application)
    application.startService()
    reactor.addSystemEventTrigger("before", "shutdown", application.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
