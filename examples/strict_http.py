"""
One HTTP/1.1 GET over its own connection, read strictly: every byte the
server sends is accounted for, and the socket is known to be closed.

Why not ``twisted.web.client.Agent``: it stops reading a response at its
``Content-Length`` and drops what follows without a word (the bytes left in
the same read are ignored; later ones arrive on a pooled connection and are
discarded), so a mirror that sends ``Content-Length: 2048`` followed by
4,096 bytes gets a 2,048-byte file accepted.  RFC 9112 (section 6.3) says
such extra data may mean the declared length was wrong: a mirror that sends
it is broken for that blob.  And a cancelled ``Agent`` request closes its
connection politely, some time later, with nothing to wait for.

So the request says ``Connection: close``, and a server must close after its
response (RFC 9112, section 9.6).  A body framed by ``Content-Length`` or
chunked coding is complete when it is all in *and* the server has closed
with nothing more, or has sent nothing more for `LINGER` seconds (a server
that ignores ``Connection: close`` costs that much, and no more).  Any byte
past the end of the response fails the GET.  A body framed by the close
itself is complete at the close.  An RFC 9530 ``Repr-Digest`` (sha-256),
when the server sends one, is checked against the body.

`StrictGet.abort` drops the connection at once and returns a Deferred that
fires when its socket is closed, so whoever owns the GET can wait for that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from twisted.internet import protocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

#: Seconds a server that keeps the connection open after a complete
#: response has to show any further byte (which would fail the GET).
LINGER = 0.1
#: The response head (status line and headers) may not be longer.
MAX_HEAD = 65536


class HTTPError(Exception):
    """What was wrong with a response, said for a human."""


class Listener(Protocol):
    """What a `StrictGet` tells about the response as it arrives."""

    def alive(self) -> None:
        """Bytes arrived (once per read): a sign of life."""

    def data(self, chunk: bytes) -> None:
        """Some of the body (of a 200 response), in order."""


def endpoint_for(url: str, reactor: Any) -> Any:
    """
    A client endpoint for ``http(s)://host[:port]``.  An IP address is
    connected to directly (no resolver thread); a name goes through
    ``HostnameEndpoint``; https through TLS (which needs pyOpenSSL).
    """
    from twisted.internet import endpoints

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        endpoint: Any = endpoints.HostnameEndpoint(reactor, host, port)
    else:
        tcp = endpoints.TCP6ClientEndpoint if address.version == 6 else endpoints.TCP4ClientEndpoint
        endpoint = tcp(reactor, host, port)
    if parts.scheme == "https":
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = endpoints.wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint


def host_header(url: str) -> bytes:
    """The ``Host`` header value for a mirror URL."""
    return urlsplit(url).netloc.encode("idna")


def expected_digest(values: list[bytes]) -> bytes | None:
    """
    The sha-256 digest a ``Repr-Digest`` field announces (RFC 9530: a
    structured dictionary, ``sha-256=:<base64>:``), or None when it names
    no sha-256; `HTTPError` if it is not readable.
    """
    for member in b",".join(values).split(b","):
        key, _, value = member.strip().partition(b"=")
        if key.strip().lower() != b"sha-256":
            continue
        value = value.split(b";")[0].strip()
        try:
            if not (len(value) >= 2 and value[:1] == value[-1:] == b":"):
                raise ValueError
            digest = base64.b64decode(value[1:-1], validate=True)
        except (ValueError, binascii.Error):
            raise HTTPError(f"unreadable Repr-Digest: {value[:80]!r}") from None
        if len(digest) != 32:
            raise HTTPError(f"Repr-Digest sha-256 of {len(digest)} bytes, not 32")
        return digest
    return None


class StrictGet(protocol.Protocol):
    """
    ``GET path`` over one connection.  ``done`` fires with the body's size,
    or fails with `HTTPError` (not 200, short, too long, garbled, digest
    mismatch) or the connection's error; ``closed`` fires once the
    connection is gone.
    """

    def __init__(
        self, host: bytes, path: bytes, listener: Listener, call_later: Callable[..., Any]
    ) -> None:
        self.request = b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)
        self.listener = listener
        self.call_later = call_later
        self.done: Deferred[int] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.buffer = b""
        self.stage = "head"  # head, length, chunk-size, chunk, trailer, to-close, ended
        self.left = 0  # body bytes still due (length, chunk)
        self.received = 0
        self.declared: int | None = None
        self.digest: bytes | None = None
        self.hash = hashlib.sha256()
        self.linger: Any = None

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.listener.alive()
        self.buffer += data
        try:
            while self.buffer and not self.done.called and self._step():
                pass
        except HTTPError:
            self._fail(Failure())

    def _step(self) -> bool:
        """Consume what the buffer holds for the current stage; False: need more."""
        stage, buf = self.stage, self.buffer
        if stage == "head":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise HTTPError(f"no end of headers in {len(buf)} bytes")
                return False
            self.buffer = buf[end + 4 :]
            self._head(buf[:end])
        elif stage in ("length", "chunk", "to-close"):
            take = buf if stage == "to-close" else buf[: self.left]
            self.buffer = buf[len(take) :]
            self.left -= len(take)
            self._body(take)
            if stage == "length" and not self.left:
                self._complete()
            elif stage == "chunk" and not self.left:
                self.stage = "chunk-end"
        elif stage == "chunk-end":
            if len(buf) < 2:
                return False
            if buf[:2] != b"\r\n":
                raise HTTPError("garbled chunked body: no CRLF after a chunk")
            self.buffer, self.stage = buf[2:], "chunk-size"
        elif stage in ("chunk-size", "trailer"):
            line, sep, rest = buf.partition(b"\r\n")
            if not sep:
                if len(buf) > MAX_HEAD:
                    raise HTTPError("garbled chunked body: a line too long")
                return False
            self.buffer = rest
            if stage == "trailer":
                if not line:
                    self._complete()
            else:
                self._chunk_size(line)
        else:  # "ended": the response was complete
            raise HTTPError(
                f"{len(buf)} bytes past the end of the response"
                + (f" (Content-Length: {self.declared})" if self.declared is not None else "")
            )
        return True

    def _head(self, head: bytes) -> None:
        status_line, *lines = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HTTPError(f"not an HTTP response: {status_line[:80]!r}")
        if parts[1] != b"200":
            phrase = parts[2].decode(errors="replace") if len(parts) > 2 else ""
            raise HTTPError(f"HTTP {int(parts[1])} {phrase}".rstrip())
        headers: dict[bytes, list[bytes]] = {}
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep or not name.strip():
                raise HTTPError(f"garbled header line: {line[:80]!r}")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        self.digest = expected_digest(headers.get(b"repr-digest", []))
        codings = b",".join(headers.get(b"transfer-encoding", [])).lower()
        lengths = {v for v in b",".join(headers.get(b"content-length", [])).split(b",") if v}
        if codings:
            if codings.split(b",")[-1].strip() != b"chunked":
                raise HTTPError(
                    f"unsupported Transfer-Encoding: {codings.decode(errors='replace')}"
                )
            self.stage = "chunk-size"
        elif lengths:
            if len(lengths) > 1 or not all(v.strip().isdigit() for v in lengths):
                raise HTTPError(f"bad Content-Length: {b', '.join(sorted(lengths))!r}")
            self.declared = self.left = int(lengths.pop())
            self.stage = "length"
            if not self.left:
                self._complete()
        else:
            self.stage = "to-close"

    def _chunk_size(self, line: bytes) -> None:
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise HTTPError(f"garbled chunked body: bad chunk size {line[:40]!r}") from None
        if size < 0:
            raise HTTPError(f"garbled chunked body: bad chunk size {line[:40]!r}")
        self.stage, self.left = ("chunk", size) if size else ("trailer", 0)

    def _body(self, chunk: bytes) -> None:
        if chunk:
            self.received += len(chunk)
            self.hash.update(chunk)
            self.listener.data(chunk)

    def _complete(self) -> None:
        """The response is all in: wait for the close, and for nothing more."""
        self.stage = "ended"
        self.linger = self.call_later(LINGER, self._succeed)

    def _succeed(self) -> None:
        self.linger = None
        if self.done.called:
            return
        if self.digest is not None and self.hash.digest() != self.digest:
            self._fail(
                Failure(HTTPError("Repr-Digest mismatch: the body is not what was announced"))
            )
            return
        self.done.callback(self.received)
        self.abort()

    def _fail(self, failure: Failure) -> None:
        if not self.done.called:
            self.done.errback(failure)
        self.abort()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.linger is not None and self.linger.active():
            self.linger.cancel()
        if self.stage == "to-close" and reason.check(ConnectionDone):
            self._complete()
        if self.stage == "ended":
            self._succeed()
        elif self.stage == "length":
            self._fail(
                Failure(HTTPError(f"short body: {self.received} of {self.declared} bytes, then "
                                  f"{type(reason.value).__name__}"))
            )  # fmt: skip
        elif self.stage != "head" or self.buffer:
            self._fail(Failure(HTTPError(f"response cut short ({type(reason.value).__name__})")))
        else:
            self._fail(reason)
        self.closed.callback(None)

    def abort(self) -> Deferred[None]:
        """Drop the connection now; the Deferred fires when its socket is closed."""
        if self.closed.called or self.transport is None:
            return succeed(None)
        self.transport.abortConnection()  # type: ignore[attr-defined]
        waiting: Deferred[None] = Deferred()

        def notify(result: None) -> None:
            waiting.callback(None)

        self.closed.addCallback(notify)
        return waiting
