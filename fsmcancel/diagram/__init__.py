"""
State diagrams generated from the code, so they cannot drift from it.

:func:`render` draws one machine -- a :class:`MachineSpec`, anything with a
``.spec`` (an fsmcancel machine factory or a live operation), or a plain
Automat ``TypeMachine`` / ``MethodicalMachine`` -- as DOT, Mermaid, SVG or
PNG.  Diagrams mark the initial, cleanup and terminal states, label every
transition ``input [guard] / behaviour``, draw cancellations and timeouts
distinctly (timeouts with their configured rule), list the resources each
state owns, and link a state to the child machines it runs.

``fsmcancel diagram`` (:mod:`fsmcancel.diagram._cli`) keeps a directory of
committed diagrams current with :func:`find_machines`, :func:`diagram_files`,
:func:`write_diagrams` and :func:`stale_diagrams`.

This module only gathers the public names.  The package reads in the order
a diagram is made, one concept a module:

=====================  =====================================================
``_discover``          targets (modules, packages, attributes) -> machines
``_machines``          what can be drawn -> its ``MachineSpec``
``_from_automat``      a plain Automat machine -> a ``MachineSpec``
``_model``             spec -> ``DiagramView``: every choice a reader sees
``_timeout_labels``    call kind -> timeout rule text, from configuration
``_palette``           the colours shared by every format and the legend
``_dot``               view -> DOT text
``_legend``            view -> the title and legend of a DOT diagram
``_mermaid``           view -> Mermaid ``stateDiagram-v2`` text
``_graphviz``          DOT text -> SVG or PNG, by running Graphviz
``_render``            the formats, and the line from machine to output
``_files``             file names, writing, comparing with what is on disk
``_cli``               the ``fsmcancel diagram`` command
=====================  =====================================================

Nothing here imports fsmcancel's core except ``fsmcancel.core._spec``: a diagram
needs the structure of a machine, never its running parts.
"""

from __future__ import annotations

from fsmcancel.diagram._discover import FoundMachine, TargetError, find_machines
from fsmcancel.diagram._files import stale_diagrams, write_diagrams
from fsmcancel.diagram._graphviz import GraphvizNotFound, find_dot
from fsmcancel.diagram._machines import spec_of
from fsmcancel.diagram._model import DEFAULT_DIRECTION, DIRECTIONS, Direction, TimeoutLabel
from fsmcancel.diagram._render import (
    DEFAULT_FORMATS,
    FORMATS,
    SUFFIXES,
    DiagramFormat,
    diagram_files,
    render,
)

__all__ = [
    "DEFAULT_DIRECTION",
    "DEFAULT_FORMATS",
    "DIRECTIONS",
    "FORMATS",
    "SUFFIXES",
    "DiagramFormat",
    "Direction",
    "FoundMachine",
    "GraphvizNotFound",
    "TargetError",
    "TimeoutLabel",
    "diagram_files",
    "find_dot",
    "find_machines",
    "render",
    "spec_of",
    "stale_diagrams",
    "write_diagrams",
]
