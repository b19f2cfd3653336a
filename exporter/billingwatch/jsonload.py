"""JSON decoding on the hot paths (webhook bodies, replay lines, /api/import): orjson, at about
half the stdlib's CPU per event (docs/benchmarks.md), with the stdlib's verdict on what it refuses.

orjson refuses a few documents the stdlib takes (integers beyond 64 bits, NaN, lone surrogates,
nesting past 1024): those go to json.loads, so what parses, and to what, never depends on the
parser. A ValueError (or RecursionError) means the text is not JSON, as with json.loads.
"""

import json
from typing import Any

import orjson


def loads(text: bytes | str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
