"""
``python -m fsmcancel``: the ``fsmcancel`` command, for when the console
script is not on ``PATH`` (a virtualenv that is not activated, say).
"""

import sys

from fsmcancel.cli import main

if __name__ == "__main__":
    sys.exit(main())
