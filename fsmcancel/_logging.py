"""
Sending structlog events to ``twisted.logger``.

structlog's own Twisted integration wraps the legacy ``twisted.python.log``,
whose loggers only have ``msg`` and ``err``; a structlog logger that calls
``info()`` or ``debug()`` on them fails.  This factory gives structlog
loggers with the usual level methods that emit into ``twisted.logger`` with
the matching ``LogLevel``, so fsmcancel's events, and the application's,
land in the same observers (text, JSON, files) as the rest of a Twisted
program: each in the namespace of the logger that emitted it, and each
exception as a ``log_failure`` whose traceback the observers print.
"""

from __future__ import annotations

import sys
from types import FrameType, TracebackType
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

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class TwistedLogger:
    """
    A structlog "logger" that emits into ``twisted.logger``, in
    ``namespace``.

    If the last structlog processor renders a string (``KeyValueRenderer``,
    ``JSONRenderer``), that string is the message.  If it leaves the event
    dict as is, the fields travel as structured fields of the Twisted event
    (so ``jsonFileLogObserver`` keeps them), and the exception named by
    ``exc_info`` becomes the event's ``log_failure``, traceback included.
    ``exc_info`` may take any of the forms structlog accepts: ``True`` (the
    exception being handled, as ``log.exception()`` sets), an exception
    instance, or a ``sys.exc_info()`` tuple.
    """

    def __init__(self, namespace: str = "fsmcancel") -> None:
        self.namespace = namespace
        self._logger = Logger(namespace=namespace)

    def __getattr__(self, name: str) -> Any:
        level = _LEVELS.get(name)
        if level is None:
            raise AttributeError(name)

        def emit(message: str | None = None, **fields: Any) -> None:
            if message is None:
                message = str(fields.get("event", ""))
            # A logger called as .exception() directly (structlog's generic
            # BoundLogger does that) means the exception being handled.
            exc_info = fields.pop("exc_info", name == "exception")
            found = _exc_info(exc_info)
            if found is not None:
                fields["log_failure"] = Failure(found[1], found[0], found[2])  # type: ignore[no-untyped-call]
            # Twisted owns "log_*", "format" and "level"; structlog's level
            # is Twisted's log_level already.
            fields.pop("level", None)
            fields = {_field(k): v for k, v in fields.items()}
            self._logger.emit(level, "{fsmcancel_message}", fsmcancel_message=message, **fields)

        return emit


def _exc_info(value: object) -> _ExcInfo | None:
    """
    The ``(type, value, traceback)`` that structlog's ``exc_info`` means, or
    ``None`` if it names no exception.
    """
    if isinstance(value, BaseException):
        return type(value), value, value.__traceback__
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value
    if value is True:
        current = sys.exc_info()
        if current[1] is not None:
            return current
    return None


def _field(key: str) -> str:
    if key == "format" or (key.startswith("log_") and key != "log_failure"):
        return f"_{key}"
    return key


class TwistedLoggerFactory:
    """
    ``structlog.configure(logger_factory=TwistedLoggerFactory(), ...)``.

    Each logger emits in the Twisted namespace of its name:
    ``structlog.get_logger("myapp")`` in ``myapp``, fsmcancel's own events
    in ``fsmcancel``.  A logger got without a name uses ``namespace`` if
    given, else the module that logs (as ``twisted.logger.Logger()`` does).
    """

    def __init__(self, namespace: str | None = None) -> None:
        self._namespace = namespace

    def __call__(self, *args: Any) -> TwistedLogger:
        if args and isinstance(args[0], str) and args[0]:
            return TwistedLogger(args[0])
        if self._namespace is not None:
            return TwistedLogger(self._namespace)
        return TwistedLogger(_calling_module())


def _calling_module() -> str:
    """
    The name of the first module up the stack that is neither structlog nor
    this one: the module whose code is logging.  structlog creates a
    logger when it first logs, so that is the frame that asked for it.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module and module != __name__ and module.split(".")[0] != "structlog":
            return module
        frame = frame.f_back
    return "structlog"
