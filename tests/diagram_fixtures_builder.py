"""
A real fsmcancel machine, built with ``OperationBuilder``, to diagram.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from fsmcancel import Cancellable, Operation, OperationBuilder, OperationFactory


class FetchInputs(Cancellable, Protocol):
    def connected(self) -> None: ...
    def stalled(self) -> None: ...
    def closed(self) -> None: ...


class FetchCore:
    pass


def give_up(inputs: FetchInputs, op: Operation[FetchInputs, FetchCore]) -> None:
    pass


def _fetch() -> OperationFactory[FetchInputs, FetchCore]:
    # A Protocol is not a concrete class, which mypy insists type[I] means.
    inputs = cast(Any, FetchInputs)
    builder = OperationBuilder[FetchInputs, FetchCore](inputs, FetchCore, name="fetch")
    connecting = builder.state("connecting", resources=["connect attempt"])
    receiving = builder.state("receiving", resources=["connection", "read call"])
    closing = builder.cleanup_state("closing", resources=["connection"])
    done = builder.terminal_state("done")
    builder.timeout(FetchInputs.stalled, "read")

    connecting.upon(FetchInputs.connected).to(receiving).returns(None)
    connecting.upon(FetchInputs.cancel).to(done).returns(None)

    receiving.upon(FetchInputs.stalled).to(closing)(give_up)
    receiving.upon(FetchInputs.cancel).to(closing).returns(None)
    closing.upon(FetchInputs.closed).to(done).returns(None)
    return builder.build()


fetch = _fetch()
