"""store/batch_args.json_text: orjson's text for flat objects is the stdlib's, byte for byte."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billingwatch.store.batch_args import json_text

VALUES = st.one_of(st.text(), st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70))
FINITE = st.floats(allow_nan=False, allow_infinity=False)
OBJECTS = st.dictionaries(st.text(), VALUES | FINITE | st.lists(VALUES, max_size=3))


def stdlib(value: object) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text


@given(OBJECTS)
def test_the_text_of_the_stdlib(value: dict[str, object]) -> None:
    assert json_text(value) == stdlib(value)


def test_every_code_point_and_the_edges() -> None:
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    for value in ({"a": every, every[:300]: 1}, {"s": "\ud800x", "n": 2**64}, {"big": -(2**63) - 1, "f": 1e16},
                  {"t": True, "f": False, "z": None, "m": 2**64 - 1}):
        assert json_text(value) == stdlib(value)


def test_what_json_cannot_hold_is_a_value_error() -> None:
    for value in ({"inf": float("inf")}, {"nan": float("nan")}):
        with pytest.raises(ValueError):
            json_text(value)
