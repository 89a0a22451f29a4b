"""
A progress bar on the last line of a terminal, with log lines above it.

A bar redrawn in place (``\\r``) and log lines written to the same terminal
share a line unless each log line first clears the bar: the log line then
starts at the beginning of a clean line, and the bar is drawn again under
it.  `ProgressLine` does both, and is also the file the log is printed to
(``structlog.PrintLoggerFactory(progress_line)``).
"""

from __future__ import annotations

import io
from typing import TextIO

#: Carriage return, then erase to the end of the line (ANSI "EL").
CLEAR = "\r\x1b[K"


class ProgressLine(io.TextIOBase):
    """
    The bar shown last on ``stream`` (a terminal), and a text file whose
    ``write`` puts the lines logged above it.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.bar = ""
        self._partial = ""

    def show(self, bar: str) -> None:
        """
        Draw ``bar`` in place of the previous one.
        """
        self.bar = bar
        self.stream.write(CLEAR + bar)
        self.stream.flush()

    def clear(self) -> None:
        """
        Erase the bar, leaving the cursor at the start of an empty line.
        """
        if self.bar:
            self.stream.write(CLEAR)
            self.stream.flush()
        self.bar = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        """
        Write log output: each complete line goes above the bar.
        """
        self._partial += text
        if "\n" in self._partial:
            lines, _, self._partial = self._partial.rpartition("\n")
            self.stream.write((CLEAR if self.bar else "") + lines + "\n" + self.bar)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
