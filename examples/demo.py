"""
The demo: ``python -m examples.demo``.

Shows, with every fsmcancel event logged, an operation completing and then
a cancel flowing into the machine: the transition it causes, the release of
the connection the state owned, and the completion firing last.
"""

from __future__ import annotations

import logging
import sys

from examples import fetch_line

if __name__ == "__main__":
    sys.exit(fetch_line.main(logging.DEBUG))
