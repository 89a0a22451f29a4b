"""
Durations as people write them: ``"250ms"``, ``"5s"``, ``"2m"``.

Configuration files are read by people who did not write them, so a bare
number is refused: ``timeout = 5`` could mean seconds or milliseconds, and a
factor-of-1000 mistake in a timeout is exactly the bug this package exists to
prevent.  Internally every duration is a ``float`` of seconds, the unit of
``IReactorTime.seconds()``.
"""

from __future__ import annotations

import math
import re

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|m|h)")


class DurationError(ValueError):
    """
    A string that is not a duration.  The message says what would be.
    """


def parse_duration(text: object) -> float:
    """
    Return the number of seconds ``text`` denotes.

    Accepts one number followed by one unit (``us``, ``ms``, ``s``, ``m``,
    ``h``), e.g. ``"250ms"``, ``"1.5s"``, ``"2m"``.  Negative values and
    non-strings are refused; whether zero makes sense is the caller's call.
    """
    if not isinstance(text, str):
        raise DurationError(
            f"expected a duration string with a unit such as '250ms', '5s' or '2m', "
            f"got {type(text).__name__} {text!r}"
        )
    match = _PATTERN.fullmatch(text.strip())
    if match is None:
        raise DurationError(
            f"{text!r} is not a duration; write a non-negative number and a unit "
            f"(us, ms, s, m, h), e.g. '250ms', '5s' or '2m'"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise DurationError(f"{text!r} is too large to be a duration")
    return seconds


def format_duration(seconds: float) -> str:
    """
    Render ``seconds`` in the unit people would have written it in.

    The result parses back with `parse_duration` (up to float rounding), so
    ``fsmcancel timeouts show`` prints values that can be pasted into a file.
    """
    if seconds == 0:
        return "0s"
    for unit, scale in (("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3)):
        value = seconds / scale
        if value >= 1 and abs(value - round(value, 3)) < 1e-9:
            return f"{_trim(value)}{unit}"
    if seconds >= 1:
        return f"{_trim(seconds)}s"
    if seconds >= 1e-3:
        return f"{_trim(seconds * 1e3)}ms"
    return f"{_trim(seconds * 1e6)}us"


def _trim(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")
