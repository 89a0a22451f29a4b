"""
``examples.strict_http``: one GET whose every byte is accounted for.

In-process, on a ``StringTransport`` and a ``task.Clock``: each test plays
a server's bytes into the protocol, in the reads a network could deliver,
and checks what the GET concludes and what it reported on the way.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from examples.strict_http import LINGER, HTTPError, StrictGet, expected_digest, host_header

BODY = bytes(range(256)) * 16  # 4096 bytes


def digest(body: bytes) -> bytes:
    return b"sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()) + b":"


class Recorder:
    """A `Listener` that keeps what it is told."""

    def __init__(self) -> None:
        self.reads = 0
        self.body = b""

    def alive(self) -> None:
        self.reads += 1

    def data(self, chunk: bytes) -> None:
        self.body += chunk


class Exchange:
    """A `StrictGet` on a string transport, and its outcome."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.listener = Recorder()
        self.get = StrictGet(b"mirror:8001", b"/blob/7", self.listener, self.clock.callLater)
        self.transport = StringTransport()
        self.get.makeConnection(self.transport)
        self.outcome: list[object] = []
        self.get.done.addBoth(self.outcome.append)

    def send(self, *reads: bytes) -> None:
        for data in reads:
            self.get.dataReceived(data)

    def close(self, reason: type[Exception] = ConnectionDone) -> None:
        self.get.connectionLost(Failure(reason()))

    def error(self) -> str:
        [outcome] = self.outcome
        assert isinstance(outcome, Failure) and outcome.check(HTTPError), outcome
        return str(outcome.value)


def head(length: int | None = len(BODY), *more: bytes) -> bytes:
    lines = [b"HTTP/1.1 200 OK", b"Connection: close", *more]
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_the_request_asks_for_one_response_and_a_close() -> None:
    x = Exchange()
    assert x.transport.value() == (
        b"GET /blob/7 HTTP/1.1\r\nHost: mirror:8001\r\nConnection: close\r\n\r\n"
    )
    assert host_header("http://[::1]:8001") == b"[::1]:8001"


def test_a_whole_body_then_the_close_is_the_body() -> None:
    x = Exchange()
    x.send(head() + BODY[:1000], BODY[1000:])
    assert x.outcome == []  # complete, but was that all?
    x.close()
    assert x.outcome == [len(BODY)] and x.listener.body == BODY
    assert x.listener.reads == 2 and x.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "reads",
    [
        [head(2048) + BODY],  # the excess in the same read as the end
        [head(2048) + BODY[:2048], BODY[2048:]],  # in the next read
    ],
    ids=["same-read", "later-read"],
)
def test_bytes_past_the_content_length_fail_the_get(reads: list[bytes]) -> None:
    x = Exchange()
    x.send(*reads)
    assert "2048 bytes past the end of the response (Content-Length: 2048)" in x.error()
    assert x.transport.disconnecting or x.transport.disconnected
    x.close(ConnectionLost)
    assert x.get.closed.called and len(x.outcome) == 1


def test_a_server_that_keeps_the_connection_open_is_believed_after_the_linger() -> None:
    x = Exchange()
    x.send(head() + BODY)
    x.clock.advance(LINGER * 0.9)
    assert x.outcome == []
    x.clock.advance(LINGER * 0.2)
    assert x.outcome == [len(BODY)]
    assert x.transport.disconnected  # aborted: the GET is over


def test_a_body_cut_short_is_refused() -> None:
    x = Exchange()
    x.send(head() + BODY[:100])
    x.close()
    assert x.error() == f"short body: 100 of {len(BODY)} bytes, then ConnectionDone"


@pytest.mark.parametrize(
    ("sent", "error"),
    [
        (b"HTTP/1.1 500 Internal Server Error\r\n\r\n", "HTTP 500 Internal Server Error"),
        (b"\x00\xffHELLO?\r\n\r\n", "not an HTTP response"),
        (head(10).replace(b"Content-Length: 10", b"Content-Length: ten"), "bad Content-Length"),
        (head(None, b"Transfer-Encoding: gzip"), "unsupported Transfer-Encoding: gzip"),
        (head(None, b"no colon here"), "garbled header line"),
        (head(None, b"Repr-Digest: sha-256=notbase64"), "unreadable Repr-Digest"),
    ],
    ids=["status", "garbage", "length", "coding", "header", "digest-syntax"],
)
def test_a_response_that_is_not_a_200_blob_is_refused(sent: bytes, error: str) -> None:
    x = Exchange()
    x.send(sent)
    assert error in x.error()
    assert x.listener.body == b""


def test_the_repr_digest_is_checked() -> None:
    good = Exchange()
    good.send(head(len(BODY), b"Repr-Digest: sha-512=:AAAA:, sha-256=" + digest(BODY)[8:]))
    good.send(BODY)
    good.close()
    assert good.outcome == [len(BODY)]
    bad = Exchange()
    bad.send(head(len(BODY), b"Repr-Digest: " + digest(b"other")), BODY)
    bad.close()
    assert bad.error() == "Repr-Digest mismatch: the body is not what was announced"
    # No sha-256 among the digests: nothing to check against.
    assert expected_digest([b"sha-512=:AAAA:"]) is None


def test_a_chunked_body_is_decoded_and_checked_too() -> None:
    x = Exchange()
    chunked = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    x.send(head(None, b"Transfer-Encoding: chunked"))
    for i in range(len(chunked)):  # one byte a read: every boundary is met
        x.send(chunked[i : i + 1])
    x.close()
    assert x.outcome == [11] and x.listener.body == b"hello world"
    late = Exchange()
    late.send(head(None, b"Transfer-Encoding: chunked"), b"2\r\nhi\r\n0\r\n\r\nmore")
    assert late.error() == "4 bytes past the end of the response"
    bad = Exchange()
    bad.send(head(None, b"Transfer-Encoding: chunked"), b"2\r\nhiXX")
    assert "no CRLF after a chunk" in bad.error()


def test_a_body_without_a_length_ends_at_the_close() -> None:
    x = Exchange()
    x.send(head(None), b"all of it")
    assert x.outcome == []
    x.close()
    assert x.outcome == [9]
    reset = Exchange()
    reset.send(head(None), b"some of it")
    reset.close(ConnectionLost)
    assert "response cut short (ConnectionLost)" in reset.error()


def test_abort_drops_the_connection_and_says_when_it_is_closed() -> None:
    x = Exchange()
    x.send(head() + BODY[:10])
    waited = x.get.abort()
    assert x.transport.disconnected and not waited.called
    x.close(ConnectionLost)
    assert waited.called and x.get.abort().called
    assert isinstance(x.outcome[0], Failure)  # cut short: whoever aborted knows why
    x.outcome[0].trap(HTTPError)
