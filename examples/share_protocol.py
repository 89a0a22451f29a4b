"""
The storage servers' wire protocol, client side: one request per TCP
connection.

::

    QUERY <si>\\n       ->  HAVE <si> <n> <n> ...\\n   (ascending; none: "HAVE <si>\\n")
    GET <si> <n>\\n     ->  SHARE <si> <n> <length>\\n, then exactly <length> bytes
                       ->  NONE <si> <n>\\n

The client connects, sends one line and reads one response; the server
closes after its response.  This module knows the format and nothing of
what to ask whom: `StorageExchange` is one request on one connection, whose
answer line and share body arrive as two Deferreds, so that a caller can
guard each with its own timeout (the answer is the server thinking, the
body is a stream).  The machines in `examples.share_machines` and the
plain-Twisted comparison in ``tests/benchmarks`` both use it.

Strictness, because an answer we cannot trust is a broken server for that
request, never data:

- an answer line must name our storage index (and, for ``GET``, our share);
  share numbers must be decimal, strictly ascending and below ``K``; a line
  longer than the longest valid answer is garbage (no unbounded buffering);
  words may be separated by runs of blanks, and ``\\r\\n`` ends a line as
  ``\\n`` does (a ``"HAVE <si> \\n"`` is no reason to drop a server);
- bytes after a ``HAVE`` line, before we close, make it garbled;
- a share body is complete only when the server closes cleanly after
  exactly ``<length>`` bytes (that close is the protocol's end of response);
  one byte more, a close before, or a reset, and the body is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import ClientFactory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure

#: A storage index: 1 to 64 characters of ``[a-z0-9]``.
SI_PATTERN = re.compile(r"[a-z0-9]{1,64}")
_NUMBER = re.compile(rb"[0-9]+")


class ServerError(Exception):
    """
    What one server did wrong for one request, said for a human.  ``stalled``
    is the silence (seconds) after which the request was given up, if that
    is what happened.
    """

    def __init__(self, what: str, stalled: float | None = None) -> None:
        super().__init__(what)
        self.stalled = stalled


@dataclass(frozen=True)
class Holdings:
    """A ``HAVE`` answer: the share numbers the server holds."""

    shares: frozenset[int]


@dataclass(frozen=True)
class ShareHeader:
    """A ``SHARE`` answer line: the body of ``length`` bytes follows."""

    length: int


Answer = Holdings | ShareHeader


@dataclass(frozen=True)
class Request:
    """What to ask whom: ``QUERY`` (``share`` None) or ``GET`` of ``share``."""

    server: str
    share: int | None = None

    def line(self, si: str) -> bytes:
        """The request line, with its newline."""
        if self.share is None:
            return f"QUERY {si}\n".encode()
        return f"GET {si} {self.share}\n".encode()

    def __str__(self) -> str:
        return "QUERY" if self.share is None else f"GET {self.share}"


def longest_answer(si: str, k: int) -> int:
    """The length of the longest valid answer line, newline included."""
    numbers = sum(len(str(n)) + 1 for n in range(k))
    share = len(f"SHARE {si} {k - 1} ") + 20  # a 20-digit length is already absurd
    return max(len(f"HAVE {si}") + numbers, share) + 2


def parse_answer(line: bytes, si: str, k: int, share: int | None) -> Answer:
    """
    The answer to ``Request(server, share).line(si)``, from its line (the
    ``\\n`` removed); raise `ServerError` for ``NONE`` or anything the
    protocol does not allow.
    """
    words = line.split()
    said = line.decode("ascii", "backslashreplace")[:80]
    if share is None:
        if words[:2] != [b"HAVE", si.encode()]:
            raise ServerError(f"garbled answer to QUERY: {said!r}")
        if not all(_NUMBER.fullmatch(w) for w in words[2:]):
            raise ServerError(f"garbled answer to QUERY: {said!r}")
        held = tuple(int(w) for w in words[2:])
        if any(b <= a for a, b in pairwise(held)) or any(n >= k for n in held):
            raise ServerError(f"garbled answer to QUERY (not ascending share numbers below {k})")
        return Holdings(frozenset(held))
    if words == [b"NONE", si.encode(), str(share).encode()]:
        raise ServerError(f"NONE: does not hold share {share}")
    if (
        len(words) != 4
        or words[:3] != [b"SHARE", si.encode(), str(share).encode()]
        or not _NUMBER.fullmatch(words[3])
    ):
        raise ServerError(f"garbled answer to GET {share}: {said!r}")
    return ShareHeader(int(words[3]))


class Exchange(Protocol):
    """
    One request on one connection, as the machines use it; `StorageExchange`
    is the real one, tests bring their own.

    ``answer()`` connects, sends the request line and fires with the parsed
    answer line; ``body()`` (after a `ShareHeader`) fires with the body;
    both fail with `ServerError` (or a connection error), and cancelling
    either drops the connection.  ``close()`` drops the connection if it is
    still open and fires once its socket is closed.  ``progress`` is called
    for every chunk received; ``last`` is when data last arrived (or the
    request started), by the reactor's clock.
    """

    progress: Callable[[], object] | None

    @property
    def last(self) -> float: ...

    def answer(self) -> Deferred[Answer]: ...
    def body(self) -> Deferred[bytes]: ...
    def close(self) -> Deferred[None]: ...


class Connections:
    """
    Opens `StorageExchange` objects on a reactor and counts the sockets they
    hold (``open``; the most at once in ``most``), so a caller can check a
    concurrency cap from the client's side.
    """

    def __init__(self, reactor: Any, si: str, k: int) -> None:
        self.reactor = reactor
        self.si = si
        self.k = k
        self.longest = longest_answer(si, k)
        self.open = 0
        self.most = 0

    def __call__(self, request: Request) -> StorageExchange:
        return StorageExchange(self, request)

    def opened(self) -> None:
        self.open += 1
        self.most = max(self.most, self.open)


def split_address(server: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) into its parts; ``ValueError`` if bad."""
    host, sep, port = server.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad server address {server!r}: expected HOST:PORT")
    return host, int(port)


class StorageExchange(TwistedProtocol):
    """
    One request to one storage server over TCP (see `Exchange`).
    """

    def __init__(self, connections: Connections, request: Request) -> None:
        self.connections = connections
        self.request = request
        self.progress: Callable[[], object] | None = None
        self._clock = connections.reactor
        self._last: float = self._clock.seconds()
        self._buffer = b""
        self._header: ShareHeader | None = None
        self._connector: Any = None
        self._holds_socket = False
        self._lost = False
        self._answered = False  # the whole response is in: close politely
        self._answer: Deferred[Answer] = Deferred(lambda _: self._drop())
        # Settled once; handed out by body(), so that no failure is left
        # in a Deferred nobody asked for.
        self._body: Deferred[bytes] | None = None
        self._body_outcome: bytes | Failure | None = None
        self._closed: list[Deferred[None]] = []

    @property
    def last(self) -> float:
        return self._last

    # -- what the caller uses

    def answer(self) -> Deferred[Answer]:
        host, port = split_address(self.request.server)
        self._last = self._clock.seconds()
        self._holds_socket = True
        self.connections.opened()
        self._connector = self.connections.reactor.connectTCP(host, port, _Factory(self))
        return self._answer

    def body(self) -> Deferred[bytes]:
        if self._body is None:
            self._body = Deferred(lambda _: self._drop())
            if self._body_outcome is not None:
                _fire(self._body, self._body_outcome)
        return self._body

    def close(self) -> Deferred[None]:
        if not self._holds_socket:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._closed.append(closed)
        self._drop()
        return closed

    # -- the connection

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request.line(self.connections.si))

    def dataReceived(self, data: bytes) -> None:
        self._last = self._clock.seconds()
        if self.progress is not None:
            self.progress()
        if self._header is not None:
            self._read_body(data)
        elif not self._answer.called:
            self._read_answer(data)

    def _read_answer(self, data: bytes) -> None:
        self._buffer += data
        line, newline, rest = self._buffer.partition(b"\n")
        c = self.connections
        if not newline:
            if len(self._buffer) > c.longest:
                self._answer.errback(ServerError("garbage: no answer line"))
                self._drop()
            return
        self._buffer = b""
        try:
            answer = parse_answer(line, c.si, c.k, self.request.share)
            if isinstance(answer, Holdings) and rest:
                raise ServerError("garbled: bytes after the HAVE line")
        except ServerError as e:
            self._answer.errback(e)
            self._drop()
            return
        if isinstance(answer, ShareHeader):
            self._header = answer
        else:
            self._answered = True
        self._answer.callback(answer)
        if rest:
            self._read_body(rest)

    def _read_body(self, data: bytes) -> None:
        assert self._header is not None
        if self._body_outcome is not None:
            return
        self._buffer += data
        if len(self._buffer) > self._header.length:
            error = f"longer than declared: more than {self._header.length} bytes"
            self._settle_body(Failure(ServerError(error)))
            self._drop()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self._lost = True
        if not self._answer.called:
            self._answer.errback(_lost(reason, "before answering"))
        elif self._header is not None and self._body_outcome is None:
            got, want = len(self._buffer), self._header.length
            if got == want and reason.check(ConnectionDone):
                self._settle_body(self._buffer)
            else:
                error = _lost(reason, f"after {got} of {want} bytes", short=got < want)
                self._settle_body(Failure(error))
        self._forget_socket()

    def connection_failed(self, reason: Failure) -> None:
        self._forget_socket()
        if not self._answer.called:
            self._answer.errback(reason)

    # -- letting go

    def _settle_body(self, outcome: bytes | Failure) -> None:
        self._body_outcome = outcome
        if self._body is not None and not self._body.called:
            _fire(self._body, outcome)

    def _drop(self) -> None:
        """
        Close the connection (or stop the attempt) now, `_forget_socket`
        follows: politely (FIN) once the whole response is in, else abort
        (RST: we want nothing more from it).
        """
        if self.transport is not None:
            if not self._lost and self._answered:
                self.transport.loseConnection()
            elif not self._lost:
                self.transport.abortConnection()  # type: ignore[attr-defined]
        elif self._holds_socket and self._connector is not None:
            self._connector.stopConnecting()  # -> connection_failed, at once

    def _forget_socket(self) -> None:
        if self._holds_socket:
            self._holds_socket = False
            self.connections.open -= 1
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)


def _fire(d: Deferred[bytes], outcome: bytes | Failure) -> None:
    if isinstance(outcome, Failure):
        d.errback(outcome)
    else:
        d.callback(outcome)


def _lost(reason: Failure, when: str, short: bool = False) -> ServerError:
    if reason.check(ConnectionDone):
        how = "closed"
    elif reason.check(ConnectionLost):
        how = "reset"
    else:
        how = f"lost ({reason.getErrorMessage()})"
    return ServerError(f"{'short body: ' if short else ''}connection {how} {when}")


class _Factory(ClientFactory):
    def __init__(self, exchange: StorageExchange) -> None:
        self.exchange = exchange

    def buildProtocol(self, addr: Any) -> StorageExchange:
        return self.exchange

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.exchange.connection_failed(reason)
