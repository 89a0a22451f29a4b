"""
Starting operations, and the input methods users call.

``OperationBuilder.build()`` returns an `OperationFactory`: call it with a
core to start an operation in the initial state.  The factory generates, once
per machine, the class of ``op.inputs``: one method per input of the
Protocol, which checks its arguments and runs the input to completion.  That
method is the hottest path in fsmcancel (every transition goes through it),
so its common case is inlined here rather than calling into the operation.

Owns: the generated inputs class, the Automat dispatch index and the
guard tables of one machine.  Must not touch: an operation's fields other
than those the inlined hot path mirrors from ``_dispatch``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from inspect import signature
from typing import TYPE_CHECKING, Any, Generic, Literal

from automat import NoTransition
from typing_extensions import TypeVar

from fsmcancel.core._cancel import reason_text
from fsmcancel.core._clock import ReactorTime, default_clock
from fsmcancel.core._errors import safe_text
from fsmcancel.core._guards import Alternatives, chooser
from fsmcancel.core._operation import Operation
from fsmcancel.core._registry import Registry
from fsmcancel.core._spec import MachineSpec, StateKind

if TYPE_CHECKING:
    from fsmcancel.core._builder import OperationBuilder
    from fsmcancel.core._transitions import DeclaredTransition

I = TypeVar("I")  # noqa: E741
C = TypeVar("C")
T = TypeVar("T", default=Any)


def index_transitions(machine: Any) -> None:
    """
    Make Automat's dispatch a dictionary lookup.

    Automat finds a transition by scanning every transition of the machine
    (``Automaton.outputForInput``), so a transition costs more the bigger the
    machine; in a dozen-transition machine the scan is most of the cost.  The
    automaton is built for this factory alone, so we give it an index with
    the same answers, including ``NoTransition`` for a missing one.  Should a
    future Automat change shape, we keep its own lookup.
    """

    automaton = getattr(machine, "__automat_automaton__", None)
    if automaton is None or not hasattr(automaton, "outputForInput"):
        return
    table = {
        (old, symbol): (new, tuple(outputs))
        for old, symbol, new, outputs in automaton.allTransitions()
    }

    def outputForInput(state: Any, symbol: str) -> tuple[Any, tuple[Any, ...]]:
        try:
            return table[state, symbol]
        except KeyError:
            raise NoTransition(state=state, symbol=symbol) from None

    automaton.outputForInput = outputForInput


class _InputsBase:
    __slots__ = ("_op",)

    def __init__(self, op: Operation[Any, Any]) -> None:
        self._op = op

    def __repr__(self) -> str:
        return f"<inputs of {self._op.name}>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        op = self._op
        inputs = ", ".join(sorted(n for n in dir(type(self)) if not n.startswith("_")))
        raise AttributeError(
            f"{op.name}: no input {name!r} (in state {op.state!r}); its inputs are: {inputs}"
        )


def _input_method(
    name: str, automat_method: Callable[..., Any], declared: Callable[..., Any]
) -> Callable[..., Any]:
    """
    The method users call for one input.

    The common case (not re-entrant, not finishing) is inlined here because
    it runs on every transition; everything else goes to ``Operation._feed``.

    Arguments are checked against the Protocol's signature before anything
    runs: a wrong call is the caller's mistake, raised to the caller, and
    must not become a failure of the behaviour (which would fail the whole
    operation).  Counting positional arguments is enough on the hot path;
    the full ``Signature.bind`` runs only when that count is off or keyword
    arguments are used.
    """
    sig = signature(declared)
    params = list(sig.parameters.values())[1:]  # without self
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    low = sum(1 for p in positional if p.default is p.empty)
    high = len(positional)
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        high = 1 << 30

    def check(op: Operation[Any, Any], args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        try:
            sig.bind(None, *args, **kw)
        except TypeError as e:
            raise TypeError(f"{op.name}: input {name!r} in state {op.state!r}: {e}") from None

    def feed(self: _InputsBase, *args: Any, **kw: Any) -> Any:
        op = self._op
        if kw or not low <= len(args) <= high:
            check(op, args, kw)
        if op._busy or op._finishing:
            return op._feed(name, automat_method, args, kw)
        op._busy = True
        op._input = name
        try:
            result = automat_method(op._machine, *args, **kw)
        except Exception:
            return op._failed_dispatch(name)
        if op._leaving is not None or op._queue:
            op._settle_transition()
        op._busy = False
        if op._finishing:
            op._maybe_finish()
        return result

    feed.__name__ = feed.__qualname__ = name
    return feed


def _cancel_method(self: _InputsBase, *args: object, **kw: object) -> None:
    """
    ``op.inputs.cancel(reason=None)``: the same request as ``op.cancel``.
    """
    op = self._op
    if len(args) + len(kw) > 1 or kw.keys() - {"reason"}:
        given = ", ".join([*(safe_text(a, repr) for a in args), *(f"{k}=..." for k in kw)])
        raise TypeError(
            f"{op.name}: input 'cancel' in state {op.state!r} takes one optional "
            f"argument, reason; got ({given})"
        )
    op._request_cancel(reason_text(args[0] if args else kw.get("reason")))


class OperationFactory(Generic[I, C, T]):
    """
    What ``OperationBuilder.build()`` returns: call it to start an operation.

    ``spec`` describes the machine (for diagrams and the testing helpers).
    """

    def __init__(
        self,
        builder: OperationBuilder[I, C, T],
        spec: MachineSpec,
        automat: Any,
        transitions: list[DeclaredTransition],
    ) -> None:
        self.name = builder.name
        self.unexpected = builder.unexpected
        self.grace = builder.grace
        self.outcome = builder.outcome
        self.spec = spec
        index_transitions(automat)
        self._automat = automat
        self._kinds: dict[str, StateKind] = {s.name: s.kind for s in self.spec.states}
        self._declared: dict[str, tuple[str, ...]] = {
            s.name: (*s.resources, *s.children) for s in self.spec.states
        }
        # Automat's generated class implements every method of the protocol
        # (an input no state accepts raises NoTransition, like any other),
        # and the synthetic inputs of guarded transitions.
        runtime = vars(type(automat(None)))
        guards = _guard_tables(transitions, runtime)
        methods: dict[str, Any] = {"__slots__": ()}
        self._returns_none: dict[str, bool] = {}
        for name, implementation in runtime.items():
            if name.startswith("__") or not callable(implementation):
                continue
            if builder._synthetic.is_synthetic(name):
                continue
            if name in guards:
                implementation = chooser(name, implementation, guards[name])
            protocol_method = getattr(builder._inputs, name)
            self._returns_none[name] = signature(protocol_method).return_annotation in (
                None,
                "None",
            )
            if name == "cancel":
                methods[name] = _cancel_method
                self._cancel_method: Callable[..., Any] = implementation
            else:
                methods[name] = _input_method(name, implementation, protocol_method)
        self._inputs_type = type(f"{builder._inputs.__name__}Inputs", (_InputsBase,), methods)

    def __call__(
        self,
        core: C,
        *,
        clock: ReactorTime | None = None,
        registry: Registry | None = None,
        grace: float | Literal["machine"] | None = "machine",
    ) -> Operation[I, C, T]:
        """
        Start an operation in the initial state.

        ``clock`` defaults to the global reactor; ``registry``, if given,
        lists the operation (weakly) until it completes; ``grace`` overrides
        the machine's cleanup grace for this operation (seconds, or ``None``
        to wait for cleanup forever).
        """
        grace = self.grace if grace == "machine" else check_grace(f"{self.name}: grace", grace)
        clock = default_clock() if clock is None else clock
        return Operation(self, core, clock, registry, grace)

    def __repr__(self) -> str:
        return f"<OperationFactory {self.name}>"


def check_grace(what: str, grace: object) -> float | None:
    """
    A cleanup grace: ``None`` or a finite number of seconds >= 0.
    """
    if grace is None:
        return None
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, not {grace!r}")
    if not math.isfinite(grace) or grace < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {grace!r}")
    return float(grace)


def _guard_tables(
    transitions: list[DeclaredTransition], runtime: dict[str, Any]
) -> dict[str, dict[str, Alternatives]]:
    """
    For each input with guards somewhere: per state, its alternatives in
    declaration order, with the Automat method of each synthetic input.
    """
    tables: dict[str, dict[str, Alternatives]] = {}
    for t in transitions:
        if t.guard is None:
            continue
        table = tables.setdefault(t.input, {})
        alternatives = table.setdefault(t.source.name, Alternatives(t.source.automat))
        method = runtime[getattr(t.automat_input, "__name__", "")]
        alternatives.guarded.append((t.guard, method, t.source.data and not t.nodata))
    for t in transitions:
        if t.guard is None and t.input in tables and t.source.name in tables[t.input]:
            tables[t.input][t.source.name].fallback = True
    return tables
