"""
The visual vocabulary every format shares: the fills of state kinds and the
colours of edge kinds.

Owns: colour values only.  Must not touch: which element gets which
colour -- that is each format's syntax (``_dot``, ``_mermaid``) -- nor what
counts as a cleanup state or a timeout edge (``_model``).  Kept apart so the
legend (``_legend``) shows exactly the colours the drawing uses.
"""

from __future__ import annotations

CANCEL_COLOR = "#c62828"
TIMEOUT_COLOR = "#6a1b9a"
CHILD_COLOR = "#546e7a"

CLEANUP_FILL = "#fff4d6"
CLEANUP_STROKE = "#b8860b"
TERMINAL_FILL = "#e0e0e0"
TERMINAL_STROKE = "#424242"
CURRENT_FILL = "#ffd54f"
CURRENT_STROKE = "#e65100"
