"""How an anomaly record crosses Lua: integers and details as text, so cjson never rounds them."""

import json
from typing import Any

# cjson keeps 14 significant digits of a number: integers cross Lua as strings, and come back
# as integers (redis_store._record).
INT_FIELDS = ("amount", "event_created")


def stringify(record: dict[str, Any]) -> dict[str, Any]:
    # details crosses Lua as one JSON string: cjson would round its numbers and turn {} into [].
    return {k: str(v) if k in INT_FIELDS and isinstance(v, int)
            else json.dumps(v, allow_nan=False) if k == "details" else v for k, v in record.items()}
