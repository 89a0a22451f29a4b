"""
The share finder's wire format, line by line (`examples.share_protocol`):
what an answer may say, and what makes it a broken server.  The bytes on
real sockets are checked by ``tests/test_share_finder.py``.
"""

from __future__ import annotations

import pytest

from examples.share_protocol import (
    Holdings,
    Request,
    ServerError,
    ShareHeader,
    longest_answer,
    parse_answer,
    split_address,
)


def test_request_lines() -> None:
    assert Request("h:1").line("abc") == b"QUERY abc\n"
    assert Request("h:1", 7).line("abc") == b"GET abc 7\n"
    assert str(Request("h:1")) == "QUERY" and str(Request("h:1", 7)) == "GET 7"


@pytest.mark.parametrize(
    ("line", "share", "answer"),
    [
        (b"HAVE abc 0 2 3", None, Holdings(frozenset({0, 2, 3}))),
        (b"HAVE abc", None, Holdings(frozenset())),
        (b"HAVE abc ", None, Holdings(frozenset())),  # a trailing blank
        (b"HAVE abc 1\r", None, Holdings(frozenset({1}))),  # \r\n
        (b"SHARE abc 2 4096", 2, ShareHeader(4096)),
        (b"SHARE abc 2 0", 2, ShareHeader(0)),
    ],
)
def test_answers_accepted(line: bytes, share: int | None, answer: object) -> None:
    assert parse_answer(line, "abc", 4, share) == answer


@pytest.mark.parametrize(
    ("line", "share", "said"),
    [
        (b"HAVE xyz 0", None, "garbled answer to QUERY"),  # another storage index
        (b"HAVE abc 2 1", None, "not ascending"),
        (b"HAVE abc 1 1", None, "not ascending"),
        (b"HAVE abc 4", None, "below 4"),  # n >= K
        (b"HAVE abc -1", None, "garbled answer to QUERY"),
        (b"HAVE abc one", None, "garbled answer to QUERY"),
        (b"SHARE abc 2 10", None, "garbled answer to QUERY"),
        (b"NONE abc 2", 2, "NONE: does not hold share 2"),
        (b"NONE abc 3", 2, "garbled answer to GET 2"),  # not what was asked
        (b"SHARE abc 3 10", 2, "garbled answer to GET 2"),
        (b"SHARE abc 2 -5", 2, "garbled answer to GET 2"),
        (b"SHARE abc 2 ten", 2, "garbled answer to GET 2"),
        (b"SHARE abc 2 10 extra", 2, "garbled answer to GET 2"),
        (b"HAVE abc 2", 2, "garbled answer to GET 2"),
        (b"\x16\x03\x01 garbage \xff", 2, "garbled answer to GET 2"),
    ],
)
def test_answers_refused(line: bytes, share: int | None, said: str) -> None:
    with pytest.raises(ServerError, match=said):
        parse_answer(line, "abc", 4, share)


def test_the_longest_answer_bounds_buffering() -> None:
    have = b"HAVE abc " + b" ".join(str(n).encode() for n in range(12)) + b"\r\n"
    assert len(have) <= longest_answer("abc", 12)
    assert len(b"SHARE abc 11 " + b"9" * 20 + b"\r\n") <= longest_answer("abc", 12)


@pytest.mark.parametrize(
    ("text", "parts"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9", ("::1", 9)), ("host:65535", ("host", 65535))],
)
def test_addresses(text: str, parts: tuple[str, int]) -> None:
    assert split_address(text) == parts


@pytest.mark.parametrize("text", ["host", ":80", "host:", "host:0", "host:65536", "h:x", "h:-1"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        split_address(text)
