"""
The version of fsmcancel: the one place it is written.

``pyproject.toml`` reads it from here when the package is built
(``[tool.setuptools.dynamic]``), and ``fsmcancel.__version__`` and
``fsmcancel --version`` show it, so a release changes one line.
"""

__version__ = "0.1.0"
