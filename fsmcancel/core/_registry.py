"""
A weak registry of live operations, for a debugging endpoint.

It must never be the reason an operation stays in memory, so it holds
operations weakly; operations also leave it as soon as they complete.

Owns: weak references to live operations.  Must not touch: the
operations (it lists and describes them, nothing else).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsmcancel.core._operation import Operation


class Registry:
    """
    The operations started with ``registry=this`` that have not completed.

    ``history`` keeps the last N transitions of each such operation in
    ``op.history`` (for an inspector page); 0, the default, keeps none and
    costs nothing per transition.
    """

    def __init__(self, *, history: int = 0) -> None:
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ValueError(f"Registry(history=...) must be an int >= 0, not {history!r}")
        self.history = history
        self._live: weakref.WeakValueDictionary[int, Operation[Any, Any]] = (
            weakref.WeakValueDictionary()
        )

    def _add(self, op: Operation[Any, Any]) -> None:
        self._live[op.id] = op

    def _remove(self, op_id: int) -> None:
        self._live.pop(op_id, None)

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
