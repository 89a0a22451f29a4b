"""
Fuzzing a machine's inputs: random input names, random arguments, inputs
after completion.  Every call either works or raises one of the documented
errors, naming the operation (and for an unexpected input, the state and the
input); the completion fires at most once, and after it fires nothing but a
clear error (or, for cancel, nothing at all) happens.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from fsmcancel import UnexpectedInput
from tests.test_core import Core, download_factory

INPUT_NAMES = ["start", "chunk", "finished", "closed", "peek", "cancel"]
names = st.one_of(st.sampled_from(INPUT_NAMES), st.text(min_size=1, max_size=12))
arguments = st.lists(
    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=5)), max_size=3
)
keywords = st.dictionaries(
    st.sampled_from(["data", "reason", "size", "x"]), st.integers(), max_size=2
)
calls = st.lists(st.tuples(names, arguments, keywords), max_size=25)


@settings(max_examples=300, deadline=None)
@given(calls=calls)
def test_random_inputs_get_clear_errors(calls: list[tuple[str, list[Any], dict[str, Any]]]) -> None:
    clock = Clock()
    op = download_factory()(Core(), clock=clock)
    fired: list[object] = []
    op.completion.addBoth(fired.append)
    for name, args, kw in calls:
        state_before, done_before = op.state, op.done
        try:
            getattr(op.inputs, name)(*args, **kw)
        except UnexpectedInput as e:
            assert e.operation == op.name and e.input == name and e.state == state_before
            assert op.state == state_before  # nothing changed
            assert name in str(e) and op.name in str(e)
        except TypeError as e:
            assert op.name in str(e) or name == "cancel"
            assert op.state == state_before
        except AttributeError as e:
            assert name not in INPUT_NAMES
            assert op.name in str(e) or name.startswith("_")
        if done_before:
            assert op.state == state_before
        assert len(fired) <= 1
        if op.done:
            assert len(fired) == 1
    op.cancel("end of example")
    op.cancel("force")
    assert len(fired) == 1 and op.done
    assert clock.getDelayedCalls() == [] or all(not c.active() for c in clock.getDelayedCalls())
