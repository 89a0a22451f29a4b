"""
Static checks of the outcome type (issue 12), read by mypy (``.ci/run``
runs it over ``tests/``) and by pyright (``tests/test_typing.py``).

Every ``assert_type`` must hold, and every ``# type: ignore[...]`` marks an
error the checker must report: mypy runs with ``warn_unused_ignores``, so a
mistake that stopped being caught fails the check.  Pyright is run with
``reportUnnecessaryTypeIgnoreComment`` for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from typing_extensions import assert_type

from fsmcancel import Cancellable, Operation, OperationBuilder, OperationFactory


class Fetch(Cancellable, Protocol):
    def start(self) -> None: ...
    def got(self, data: bytes) -> None: ...


@dataclass
class Core:
    url: str


Op = Operation[Fetch, Core, bytes]

builder = OperationBuilder(Fetch, Core, name="typed", outcome=bytes)
idle = builder.state("idle")
waiting = builder.state("waiting")
done = builder.terminal_state("done")
idle.upon(Fetch.start).to(waiting).returns(None)


@waiting.upon(Fetch.got).to(done)
def got(inputs: Fetch, op: Op, data: bytes) -> None:
    op.succeed(data)
    op.succeed(len(data))  # type: ignore[arg-type]


(idle | waiting).upon(Fetch.cancel).to(done).returns(None)
fetch = builder.build()
assert_type(fetch, OperationFactory[Fetch, Core, bytes])

op = fetch(Core("http://127.0.0.1/"), clock=Clock())
assert_type(op, Operation[Fetch, Core, bytes])
assert_type(op.completion, Deferred[bytes])
assert_type(op.observe(), Deferred[bytes])
op.succeed(b"ok")
op.succeed("text")  # type: ignore[arg-type]


def length(result: bytes) -> int:
    return len(result)


op.completion.addCallback(length)
op.completion.addCallback(str.upper)  # type: ignore[call-overload]

# Without an outcome type, everything is Any, as before.
untyped = OperationBuilder(Fetch, Core, name="untyped")
assert_type(untyped, OperationBuilder[Fetch, Core, Any])
plain: Operation[Fetch, Core] = op  # the two-argument form still works
assert_type(plain.completion, Deferred[Any])

# A type that is not a class: name it as a type argument.
optional = OperationBuilder[Fetch, Core, "str | None"](Fetch, Core, name="optional")
assert_type(optional, OperationBuilder[Fetch, Core, "str | None"])
