"""
A weak registry of live operations, for a debugging endpoint.

It must never be the reason an operation stays in memory, so it holds
operations weakly; operations also leave it as soon as they complete.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsmcancel._operation import Operation


class Registry:
    """
    The operations started with ``registry=this`` that have not completed.
    """

    def __init__(self) -> None:
        self._live: weakref.WeakValueDictionary[int, Operation[Any, Any]] = (
            weakref.WeakValueDictionary()
        )

    def _add(self, op: Operation[Any, Any]) -> None:
        self._live[op.id] = op

    def _remove(self, op: Operation[Any, Any]) -> None:
        self._live.pop(op.id, None)

    def __len__(self) -> int:
        return len(self._live)

    def operations(self) -> list[Operation[Any, Any]]:
        """
        The live operations, oldest first.
        """
        return [op for _, op in sorted(self._live.items())]

    def describe(self) -> list[dict[str, object]]:
        """
        A JSON-ready snapshot of every live operation (see
        ``Operation.describe``).
        """
        return [op.describe() for op in self.operations()]
