"""
``examples.mirror_fetch``'s ``main()`` as a program that does not exit when
``main()`` returns: it prints ``main returned CODE; sockets open: N`` (the
sockets the process still holds, from ``/proc/self/fd``) and waits for its
standard input to close.  A test can then check what the servers saw while
the process is still alive: a connection the fetcher left open would be
closed only by its exit.
"""

from __future__ import annotations

import contextlib
import os
import sys

from examples.mirror_fetch import main


def open_sockets() -> int:
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        # The listing's own descriptor is closed by now: OSError.
        with contextlib.suppress(OSError):
            found += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return found


if __name__ == "__main__":
    code = main(sys.argv[1:])
    print(f"main returned {code}; sockets open: {open_sockets()}", flush=True)
    sys.stdin.read()
    sys.exit(code)
