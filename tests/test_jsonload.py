"""billingwatch.jsonload: orjson where it reads a text as the stdlib does, the stdlib elsewhere."""

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billingwatch.jsonload import _long_digits, loads

ODD = [
    "-10000000000000000000000000000000000000000", "18446744073709551616", "9223372036854775807",
    "-9223372036854775809", '{"quantity": 100000000000000000000}', "1e400", "NaN", '["\\ud800"]',
    '{"a": 1, "a": 2}', "[" * 2000 + "]" * 2000, '"évt_ü"', "1.5", "-0", '{"id": "1234567890123456789012"}',
]


@pytest.mark.parametrize("text", ODD)
def test_the_same_value_as_the_stdlib_and_of_the_same_type(text: str) -> None:
    for given_text in (text, text.encode("utf-8", "surrogatepass")):
        try:
            expected = json.loads(given_text)
        except RecursionError:
            with pytest.raises(RecursionError):
                loads(given_text)
            continue
        got = loads(given_text)
        assert json.dumps(got) == json.dumps(expected)  # NaN != NaN: compared as text, types and all


@pytest.mark.parametrize("text", ["{not json", "", "[1,]", "\xff"])
def test_what_the_stdlib_refuses_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text.encode("latin-1") if text == "\xff" else text)


JSON = st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
                    max_leaves=12)


@given(JSON)
def test_any_document_reads_back_as_the_stdlib_reads_it(value: object) -> None:
    text = json.dumps(value)
    assert json.dumps(loads(text)) == json.dumps(json.loads(text))
    assert json.dumps(loads(text.encode())) == json.dumps(json.loads(text.encode()))


@given(st.text(alphabet="0123456789a٣ ", max_size=60))
def test_a_run_of_19_ascii_digits_is_found_as_a_regex_finds_it(text: str) -> None:
    expected = re.search(r"[0-9]{19}", text) is not None
    assert _long_digits(text) is expected
    assert _long_digits(text.encode()) is expected
