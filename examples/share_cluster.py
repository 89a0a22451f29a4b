"""
A fake cluster of storage servers for the share finder, on 127.0.0.1,
written with the standard library only (asyncio), so that it shares no code
with the client it tests::

    python -m examples.share_cluster --si SI -k K [--size BYTES] [--seed N] [--quiet] \\
        --server BEHAVIOUR[:SHARES][@DELAY] [--server ...]

``SHARES`` is ``all`` (the default) or a list like ``0-3,5``; ``DELAY``
(seconds) makes the server wait that long before answering a ``QUERY``.
Each server prints ``BEHAVIOUR listening on 127.0.0.1:PORT holds SHARES``, then the
file's sha256 is printed, then one line per event (``--quiet``: none), each
starting with the ``time.monotonic()`` it happened at::

    <time> <server> #<connection> opened | request <QUERY|GET n> | silent <GET n> | closed <how>

``silent`` is when a server sent its last byte before going quiet for good;
``closed`` is when it saw the connection end (its own close, or the
client's).  The behaviours (`BEHAVIOURS`):

``healthy``
    answers at once.
``silent``
    accepts, reads the request, never answers, never closes.
``slow``
    alive but slow: answers after 0.3-1.5 s, then trickles a body in 16
    pieces 10-40 ms apart.
``reset``
    answers queries; sends half a share, then resets (RST).
``short``
    answers queries; announces a share, sends half, closes.
``garbage``
    answers queries; answers ``GET`` with bytes that are not the protocol.
``long``
    answers queries; sends a share with 7 bytes more than announced.
``stall``
    answers queries; sends half a share, then goes silent, connection open.
``none``
    answers queries; answers every ``GET`` with ``NONE``.

Share ``n`` of ``SI`` is `share_bytes` (a deterministic stream, its length
varying with ``n``); the file is `file_bytes`.  Tests run a `Cluster` in a
thread (`running`) and read its ``events``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

BEHAVIOURS = ("healthy", "silent", "slow", "reset", "short", "garbage", "long", "stall", "none")
DEFAULT_SIZE = 4096
# What a connection's handler does once it has answered (or not).
CLOSE, HOLD, STALLED = "close", "hold until the client closes", "stalled: hold, silent"


def share_bytes(si: str, n: int, size: int = DEFAULT_SIZE) -> bytes:
    """Share ``n`` of ``si``: about ``size`` bytes, its length depending on ``n``."""
    length = size + (n * 97) % 211
    blocks = (length + 31) // 32
    data = b"".join(hashlib.sha256(f"{si}/{n}/{i}".encode()).digest() for i in range(blocks))
    return data[:length]


def file_bytes(si: str, k: int, size: int = DEFAULT_SIZE) -> bytes:
    """Shares 0..k-1 of ``si``, concatenated: what the finder must write."""
    return b"".join(share_bytes(si, n, size) for n in range(k))


@dataclass(frozen=True)
class ServerSpec:
    behaviour: str
    shares: frozenset[int] | None = None  # None: every share
    query_delay: float = 0.0

    def holds(self, n: int, k: int) -> bool:
        return 0 <= n < k and (self.shares is None or n in self.shares)


@dataclass(frozen=True)
class Event:
    at: float
    server: str
    connection: int
    what: str  # opened, request, silent, closed
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.at:.6f} {self.server} #{self.connection} {self.what} {self.detail}".rstrip()


@dataclass
class Cluster:
    """
    Servers with the given behaviours, answering for ``si`` with ``k``
    shares.  ``events`` grows as things happen (under ``changed``, notified
    on every event); ``addresses`` are ``HOST:PORT`` in the order given.
    """

    si: str
    k: int
    specs: Sequence[ServerSpec]
    size: int = DEFAULT_SIZE
    seed: int = 0
    echo: TextIO | None = None
    addresses: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _connections: int = 0

    async def start(self) -> None:
        for index, spec in enumerate(self.specs):
            rng = random.Random(f"{self.seed}/{index}")

            def handler(
                reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter,
                spec: ServerSpec = spec,
                rng: random.Random = rng,
            ) -> None:
                task = asyncio.ensure_future(self._serve(spec, rng, reader, writer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            self._servers.append(server)
            port = server.sockets[0].getsockname()[1]
            self.addresses.append(f"127.0.0.1:{port}")

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    def log(self, server: str, connection: int, what: str, detail: str = "") -> None:
        event = Event(time.monotonic(), server, connection, what, detail)
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()
        if self.echo is not None:
            print(event, file=self.echo, flush=True)

    def wait(self, done: Callable[[list[Event]], bool], timeout: float = 20.0) -> list[Event]:
        """Block until ``done(events)`` holds; fail after ``timeout`` seconds."""
        with self.changed:
            if not self.changed.wait_for(lambda: done(self.events), timeout):
                raise AssertionError(f"cluster: timed out waiting; events: {self.events}")
            return list(self.events)

    def open_connections(self) -> int:
        with self.changed:
            opened = sum(1 for e in self.events if e.what == "opened")
            return opened - sum(1 for e in self.events if e.what == "closed")

    # -- one connection

    async def _serve(
        self,
        spec: ServerSpec,
        rng: random.Random,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._connections += 1
        conn = self._connections
        name = "127.0.0.1:{}".format(writer.get_extra_info("sockname")[1])
        self.log(name, conn, "opened")
        how = "by the server"
        try:
            line = await reader.readline()
            words = line.rstrip(b"\n").decode("ascii", "replace").split(" ")
            if words[0] == "QUERY" and len(words) == 2:
                self.log(name, conn, "request", "QUERY")
                then = await self._query(spec, rng, writer, words[1])
            elif words[0] == "GET" and len(words) == 3 and words[2].isdigit():
                self.log(name, conn, "request", f"GET {words[2]}")
                then = await self._get(spec, rng, writer, words[1], int(words[2]))
            else:
                self.log(name, conn, "request", f"bad: {line!r}")
                then = CLOSE
            if then == STALLED:
                self.log(name, conn, "silent", " ".join(words[:3:2]))
            if then != CLOSE:
                how = await _until_client_closes(reader)
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            how = f"by the client ({type(e).__name__})"
        finally:
            writer.close()
            self.log(name, conn, "closed", how)

    async def _query(
        self, spec: ServerSpec, rng: random.Random, writer: asyncio.StreamWriter, si: str
    ) -> str:
        if spec.behaviour == "silent":
            return HOLD
        if spec.behaviour == "slow":
            await asyncio.sleep(rng.uniform(0.3, 1.5))
        await asyncio.sleep(spec.query_delay)
        held = [n for n in range(self.k) if si == self.si and spec.holds(n, self.k)]
        writer.write(" ".join(["HAVE", si, *map(str, held)]).encode() + b"\n")
        await writer.drain()
        return CLOSE

    async def _get(
        self, spec: ServerSpec, rng: random.Random, writer: asyncio.StreamWriter, si: str, n: int
    ) -> str:
        b = spec.behaviour
        if b == "silent":
            return HOLD
        if b == "slow":
            await asyncio.sleep(rng.uniform(0.3, 1.5))
        if si != self.si or not spec.holds(n, self.k) or b == "none":
            writer.write(f"NONE {si} {n}\n".encode())
            return CLOSE
        if b == "garbage":
            writer.write(b"\x16\x03\x01 garbage \xff\xfe\n" + bytes(range(256)))
            return CLOSE
        body = share_bytes(si, n, self.size)
        header = f"SHARE {si} {n} {len(body)}\n".encode()
        half = header + body[: len(body) // 2]
        if b in ("healthy", "long"):
            writer.write(header + body + (b"7 extra" if b == "long" else b""))
        elif b == "slow":
            writer.write(header)
            pieces = 16
            step = (len(body) + pieces - 1) // pieces
            for i in range(0, len(body), step):
                await asyncio.sleep(rng.uniform(0.01, 0.04))
                writer.write(body[i : i + step])
                await writer.drain()
        elif b == "short":
            writer.write(half)
        elif b == "reset":
            writer.write(half)
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return CLOSE
        elif b == "stall":
            writer.write(half)
            await writer.drain()
            return STALLED
        await writer.drain()
        return CLOSE


async def _until_client_closes(reader: asyncio.StreamReader) -> str:
    try:
        while await reader.read(65536):
            pass
    except ConnectionError as e:
        return f"by the client ({type(e).__name__})"
    return "by the client"


# -- running it ---------------------------------------------------------------------


@contextmanager
def running(
    si: str, k: int, specs: Sequence[ServerSpec], *, size: int = DEFAULT_SIZE, seed: int = 0
) -> Iterator[Cluster]:
    """A `Cluster` serving from a thread of its own, stopped on exit."""
    cluster = Cluster(si, k, specs, size, seed)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="share-cluster", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(cluster.start(), loop).result(timeout=10)
        yield cluster
    finally:
        asyncio.run_coroutine_threadsafe(cluster.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def server_spec(text: str) -> ServerSpec:
    """``BEHAVIOUR[:SHARES][@DELAY]``, as on the command line."""
    rest, _, delay = text.partition("@")
    behaviour, _, shares = rest.partition(":")
    if behaviour not in BEHAVIOURS:
        raise argparse.ArgumentTypeError(
            f"unknown behaviour {behaviour!r} in {text!r}; one of {', '.join(BEHAVIOURS)}"
        )
    held: set[int] = set()
    try:
        for part in shares.split(",") if shares not in ("", "all") else ():
            low, _, high = part.partition("-")
            held.update(range(int(low), int(high or low) + 1))
        seconds = float(delay or 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad share list or delay in {text!r}") from None
    return ServerSpec(behaviour, frozenset(held) if held else None, seconds)


def describe(spec: ServerSpec) -> str:
    return "all" if spec.shares is None else ",".join(map(str, sorted(spec.shares)))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.share_cluster", description=__doc__)
    p.add_argument("--si", required=True)
    p.add_argument("-k", type=int, required=True)
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="about how long a share is")
    p.add_argument("--seed", type=int, default=0, help="seed of the slow servers' delays")
    p.add_argument("--server", type=server_spec, action="append", required=True)
    p.add_argument("--quiet", action="store_true", help="print no events")
    args = p.parse_args(argv)
    echo = None if args.quiet else sys.stdout
    cluster = Cluster(args.si, args.k, args.server, args.size, args.seed, echo)

    async def serve() -> None:
        await cluster.start()
        for spec, address in zip(args.server, cluster.addresses, strict=True):
            print(f"{spec.behaviour} listening on {address} holds {describe(spec)}", flush=True)
        data = file_bytes(args.si, args.k, args.size)
        print(f"file sha256 {hashlib.sha256(data).hexdigest()} ({len(data)} bytes)", flush=True)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        await cluster.stop()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
