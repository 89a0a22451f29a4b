"""
The share finder's machines: Brian Warner's downloader (seed 001), without
the wire protocol (`examples.share_protocol`) or the command line
(`examples.share_finder`).

``share-finder`` asks every server which shares of a storage index it
holds, downloads each share from a holder as soon as one is known, fails
over to another holder when a download stalls or breaks, and finishes as
soon as all K shares are in.  It has one running state, ``finding``, which
owns a child group (``op.children``) of ``share-request`` operations, one
per request on the wire (a ``QUERY`` or a ``GET``), at most C at once: the
group is the concurrency cap for queries and downloads together, and
releasing it (finishing, failing or being cancelled) cancels every request
still running and waits until each one's connection is closed.

Everything the finder knows is what the group recorded (``group.results``
and ``group.failures``, keyed by `Request`) plus each share's last ``GET``,
so its decisions are guards over that record, taken in order:

- an answer that completes the K shares ends it (``complete``);
- an outcome after which every share is in hand or can no longer be had,
  some of them the latter, ends it naming those (``hopeless``): a share can
  no longer be had when every server has answered or failed, and it has no
  download running and no holder left untried;
- otherwise it stays in ``finding``: a ``HAVE`` starts the downloads it
  makes possible, a failed ``GET`` is sent to the next holder, the
  healthiest first (``timeouts.rank``).

A new download takes the slot of the request whose outcome started it
(the group delivers an outcome before refilling), so a re-request after a
stall waits for no queued query.

``share-request`` is one request: ``asking`` (the connection, and the
answer line guarded by the ``query`` timeout kind), then, for a ``GET``
answered by a ``SHARE`` header, ``receiving`` (the body, guarded by the
``share`` kind, progress per chunk).  Its completion is the answer (the
server's `Holdings`, or the share's bytes) or a `ServerError`, recorded in
the server's `ServerStats`; it fires once the connection is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from twisted.python.failure import Failure

from examples.share_protocol import Answer, Exchange, Holdings, Request, ShareHeader
from examples.share_report import Found, ServerStats, SharesUnavailable, Stats
from fsmcancel import Cancellable, ChildGroup, Operation, OperationBuilder
from fsmcancel.timeouts import TimedOut, Timeouts

QUERY_KIND = "query"
SHARE_KIND = "share"
TIMEOUTS = Path(__file__).with_name("share_timeouts.toml")

#: What a request brings back: a server's holdings, or a share's bytes.
Reply = Holdings | bytes


# -- one request ------------------------------------------------------------------


class Asking(Cancellable, Protocol):
    def start(self) -> None: ...
    def answered(self, answer: Answer | bytes) -> None: ...
    def failed(self, failure: Failure) -> None: ...
    def silent(self, timed_out: TimedOut) -> None: ...
    def stalled(self, timed_out: TimedOut) -> None: ...


@dataclass(eq=False)
class Call:
    """The core of one request: what to ask, on which connection, for which search."""

    request: Request
    exchange: Exchange
    search: Search
    stats: ServerStats


RequestOp = Operation[Asking, Call, Reply]

r = OperationBuilder[Asking, Call, Reply](Asking, Call, name="share-request", timeouts=TIMEOUTS)
r_idle = r.state("idle")
asking = r.state("asking", resources=["connection", "query call"])
receiving = r.state("receiving", resources=["connection", "share call"])
r_done = r.terminal_state("done")
r.timeout(Asking.silent, kind=QUERY_KIND)
r.timeout(Asking.stalled, kind=SHARE_KIND)


@r_idle.upon(Asking.start).to(asking)
def start(inputs: Asking, op: RequestOp) -> None:
    c = op.core
    c.stats.sent(c.request)
    op.own(c.exchange, lambda exchange: exchange.close(), name="connection")
    c.search.timeouts.call(
        op, c.exchange.answer, kind=QUERY_KIND, peer=c.request.server,
        on_result=inputs.answered, on_failure=inputs.failed, on_timeout=inputs.silent,
    )  # fmt: skip


def body_follows(inputs: Asking, op: RequestOp, answer: Answer | bytes) -> bool:
    return isinstance(answer, ShareHeader)


@asking.upon(Asking.answered).to(receiving, when=body_follows)
def receive(inputs: Asking, op: RequestOp, answer: Answer | bytes) -> None:
    c = op.core
    op.hand_over(c.exchange)
    call = c.search.timeouts.call(
        op, c.exchange.body, kind=SHARE_KIND, peer=c.request.server,
        on_result=inputs.answered, on_failure=inputs.failed, on_timeout=inputs.stalled,
    )  # fmt: skip
    c.exchange.progress = call.progress


@(asking | receiving).upon(Asking.answered).to(r_done)
def answered(inputs: Asking, op: RequestOp, answer: Answer | bytes) -> None:
    assert not isinstance(answer, ShareHeader)  # taken by body_follows
    op.succeed(answer)


@(asking | receiving).upon(Asking.failed).to(r_done)
def failed(inputs: Asking, op: RequestOp, failure: Failure) -> None:
    op.fail(op.core.stats.error(op.core.request, failure))


@asking.upon(Asking.silent).to(r_done)
@receiving.upon(Asking.stalled).to(r_done)
def stalled(inputs: Asking, op: RequestOp, timed_out: TimedOut) -> None:
    c = op.core
    op.fail(c.stats.stall(c.request, op.clock.seconds() - c.exchange.last))


(r_idle | asking | receiving).upon(Asking.cancel).to(r_done).returns(None)
share_request = r.build()


# -- the finder -------------------------------------------------------------------


class Finding(Cancellable, Protocol):
    def start(self) -> None: ...
    def answered(self, request: Request, outcome: Reply) -> None: ...
    def failed(self, request: Request, outcome: Failure) -> None: ...


@dataclass(eq=False)
class Search:
    """
    The core of the finder: the storage index, K, the servers, the cap on
    connections, and what the machines share with the program (timeouts,
    how to open a connection, per-server statistics).
    """

    si: str
    k: int
    servers: list[str]
    concurrency: int
    timeouts: Timeouts
    connect: Callable[[Request], Exchange]
    stats: Stats = field(default_factory=Stats)
    latest: dict[int, Request] = field(default_factory=dict)  # each share's last GET


FindOp = Operation[Finding, Search, Found]
Group = ChildGroup[Request, Reply]

f = OperationBuilder(Finding, Search, name="share-finder", outcome=Found, timeouts=TIMEOUTS)
f_idle = f.state("idle")


def start_request(op: FindOp, request: Request) -> RequestOp:
    s = op.core
    call = Call(request, s.connect(request), s, s.stats[request.server])
    child = share_request(call, clock=op.clock)
    child.inputs.start()
    return child


def ask_everyone(inputs: Finding, op: FindOp) -> Group:
    return op.children(
        ((Request(x), partial(start_request, op, Request(x))) for x in op.core.servers),
        on_result=inputs.answered, on_failure=inputs.failed, limit=op.core.concurrency,
        name="requests",
    )  # fmt: skip


finding = f.state("finding", ask_everyone, resources=["requests"], children=[share_request])
f_done = f.terminal_state("done")
f_idle.upon(Finding.start).to(finding).returns(None)


# What the group recorded, read by the guards and behaviours below.


def obtained(g: Group) -> dict[int, bytes]:
    return {r.share: b for r, b in g.results.items() if isinstance(b, bytes) if r.share is not None}


def wanted(s: Search, group: Group, n: int) -> bool:
    """Share ``n`` is neither in hand nor on its way: never asked for, or its last GET failed."""
    last = s.latest.get(n)
    return last is None or last in group.failures


def untried(group: Group, n: int) -> list[str]:
    """
    The servers that said they hold share ``n`` and did not fail to send it:
    while it is `wanted`, every GET of it so far has failed.
    """
    held = [r.server for r, h in group.results.items() if isinstance(h, Holdings) and n in h.shares]
    return [server for server in held if Request(server, n) not in group.failures]


def missing(s: Search, group: Group) -> list[int]:
    if any(Request(x) not in group.results and Request(x) not in group.failures for x in s.servers):
        return []  # a server still to answer may hold anything
    return [n for n in range(s.k) if wanted(s, group, n) and not untried(group, n)]


def fetch(op: FindOp, group: Group, n: int) -> None:
    """Ask the healthiest untried holder for share ``n``, unless it is in hand or on its way."""
    holders = wanted(op.core, group, n) and untried(group, n)
    if holders:
        request = op.core.latest[n] = Request(op.core.timeouts.rank(SHARE_KIND, holders)[0], n)
        group.add(request, partial(start_request, op, request))


def complete(inputs: Finding, op: FindOp, group: Group, request: Request, outcome: Reply) -> bool:
    return len(obtained(group)) == op.core.k


def hopeless(inputs: Finding, op: FindOp, group: Group, request: Request, outcome: object) -> bool:
    lost = missing(op.core, group)
    return bool(lost) and len(lost) + len(obtained(group)) == op.core.k


@finding.upon(Finding.answered).to(f_done, when=complete)
def assemble(inputs: Finding, op: FindOp, group: Group, request: Request, outcome: Reply) -> None:
    shares = obtained(group)
    sources = {r.share: r.server for r in group.results if r.share is not None}
    op.succeed(Found(b"".join(shares[n] for n in range(op.core.k)), sources))


def give_up(inputs: Finding, op: FindOp, group: Group, request: Request, outcome: object) -> None:
    op.fail(SharesUnavailable(op.core.si, missing(op.core, group), group.failures))


finding.upon(Finding.answered).to(f_done, when=hopeless)(give_up)
finding.upon(Finding.failed).to(f_done, when=hopeless)(give_up)


def follow_up(inputs: Finding, op: FindOp, group: Group, request: Request, outcome: object) -> None:
    """Fetch what a ``HAVE`` makes possible; send a failed ``GET`` to the next holder."""
    shares = outcome.shares if isinstance(outcome, Holdings) else [request.share]
    for n in sorted(n for n in shares if n is not None):
        fetch(op, group, n)


finding.upon(Finding.answered).loop()(follow_up)
finding.upon(Finding.failed).loop()(follow_up)


(f_idle | finding).upon(Finding.cancel).to(f_done).returns(None)
share_finder = f.build()
