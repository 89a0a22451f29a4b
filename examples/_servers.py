"""
Small servers, logging set-up and command-line helpers shared by the
examples.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import structlog
from twisted.internet import reactor
from twisted.internet.defer import DeferredQueue
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.python.failure import Failure

from fsmcancel.timeouts import ConfigError, TimeoutConfig, load_config


def setup_logging(level: int = logging.DEBUG, file: TextIO | None = None) -> None:
    """
    Readable structlog output on stderr (or ``file``, which writes to it):
    one line per event, colours only on a terminal.  Production code would
    pick JSON instead (see the README).
    """
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f"),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file or sys.stderr),
        cache_logger_on_first_use=True,
    )


def quiet_logging() -> None:
    setup_logging(logging.INFO)


def timeouts_option(parser: argparse.ArgumentParser, path: str | os.PathLike[str]) -> TimeoutConfig:
    """
    The configuration a ``--timeouts FILE`` option names (environment
    overrides applied, as ``fsmcancel timeouts check`` does), or a usage
    error naming the file and what is wrong with it.
    """
    try:
        return load_config(path)
    except ConfigError as e:
        parser.error(f"--timeouts {os.fspath(path)}: {e}")
    except OSError as e:
        parser.error(f"--timeouts {os.fspath(path)}: cannot read it: {e.strerror or e}")


@dataclass
class SlowLineServer:
    """
    Sends one line ``delay`` seconds after a client connects, then closes.
    ``disconnected`` yields once per client that went away before that.
    """

    delay: float
    port: IListeningPort = field(init=False)
    open: int = 0
    disconnected: DeferredQueue[str] = field(default_factory=DeferredQueue)


class _SlowLine(Protocol):
    def __init__(self, server: SlowLineServer) -> None:
        self.server = server
        self.timer: Any = None

    def connectionMade(self) -> None:
        self.server.open += 1
        self.timer = reactor.callLater(self.server.delay, self.send)

    def send(self) -> None:
        assert self.transport is not None
        self.transport.write(b"Once upon a midnight dreary\r\n")
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.server.open -= 1
        if self.timer.active():
            self.timer.cancel()
            self.server.disconnected.put("client hung up")


def listen_slow_lines(delay: float) -> SlowLineServer:
    server = SlowLineServer(delay)
    # Typed as Any: Twisted's listenTCP wants a protocol whose .factory is
    # not Optional, which Protocol's is.
    factory: Any = ServerFactory.forProtocol(lambda: _SlowLine(server))
    server.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return server
