"""
Sending fsmcancel's structlog events to ``twisted.logger``.

structlog's own Twisted integration wraps the legacy ``twisted.python.log``,
whose loggers only have ``msg`` and ``err``; a structlog logger that calls
``info()`` or ``debug()`` on them fails.  This factory gives structlog
loggers with the usual level methods that emit into ``twisted.logger`` with
the matching ``LogLevel``, so fsmcancel's events land in the same observers
(text, JSON, files) as the rest of a Twisted program.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "msg": LogLevel.info,
    "warning": LogLevel.warn,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "exception": LogLevel.error,
    "err": LogLevel.error,
    "critical": LogLevel.critical,
    "fatal": LogLevel.critical,
}


class TwistedLogger:
    """
    A structlog "logger" that emits into ``twisted.logger``.

    If the last structlog processor renders a string (``KeyValueRenderer``,
    ``JSONRenderer``), that string is the message.  If it leaves the event
    dict as is, the fields travel as structured fields of the Twisted event
    (so ``jsonFileLogObserver`` keeps them), and ``exc_info`` becomes the
    event's ``log_failure`` so observers print the traceback.
    """

    def __init__(self, namespace: str = "fsmcancel") -> None:
        self._logger = Logger(namespace=namespace)

    def __getattr__(self, name: str) -> Any:
        level = _LEVELS.get(name)
        if level is None:
            raise AttributeError(name)

        def emit(message: str | None = None, **fields: Any) -> None:
            if message is None:
                message = str(fields.get("event", ""))
            exc_info = fields.pop("exc_info", None)
            if isinstance(exc_info, tuple) and exc_info[1] is not None:
                fields["log_failure"] = Failure(exc_info[1], exc_info[0], exc_info[2])  # type: ignore[no-untyped-call]
            # Twisted owns "log_*", "format" and "level"; structlog's level
            # is Twisted's log_level already.
            fields.pop("level", None)
            fields = {_field(k): v for k, v in fields.items()}
            self._logger.emit(level, "{fsmcancel_message}", fsmcancel_message=message, **fields)

        return emit


def _field(key: str) -> str:
    if key == "format" or (key.startswith("log_") and key != "log_failure"):
        return f"_{key}"
    return key


class TwistedLoggerFactory:
    """
    ``structlog.configure(logger_factory=TwistedLoggerFactory(), ...)``.
    """

    def __init__(self, namespace: str = "fsmcancel") -> None:
        self._namespace = namespace

    def __call__(self, *args: Any) -> TwistedLogger:
        return TwistedLogger(self._namespace)
