"""`?format=csv` on /api/anomalies and /api/events: the same rows as the JSON, as an RFC 4180
download (Python's csv module: CRLF line ends, quotes where needed).

One column per key of the JSON, the usual ones first in a fixed order, any other key a row
has after them, sorted. A cell is the JSON value written plainly: text as is, true/false,
numbers in digits, a missing key or null empty, a list or object as compact JSON. Text that a
spreadsheet would run as a formula (starting with = + - @, a tab or a carriage return) gets a
leading apostrophe, as OWASP advises: ids and summaries come from Stripe objects, which a
customer can partly write.
"""

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response

FORMATS = ("json", "csv")
ANOMALY_COLUMNS = ("detector", "severity", "priority", "livemode", "event_id", "event_type", "event_created", "summary",
                   "customer", "charge", "invoice", "subscription", "amount", "currency", "history", "related",
                   "details", "explorer")
EVENT_COLUMNS = ("id", "type", "created", "received", "livemode", "customer", "object", "amount", "currency",
                 "history", "result", "reason", "anomalies")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def format_error(params: Mapping[str, str]) -> str | None:
    """None when `format` is absent or known, else the one-line reason for a 400."""
    value = params.get("format")
    if value is None or value in FORMATS:
        return None
    return "format must be json or csv"


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def columns(rows: Sequence[Mapping[str, Any]], usual: Sequence[str]) -> list[str]:
    extra = sorted({key for row in rows for key in row} - set(usual))
    return [*usual, *extra]


def to_csv(rows: Sequence[Mapping[str, Any]], usual: Sequence[str]) -> str:
    out = io.StringIO()
    names = columns(rows, usual)
    writer = csv.writer(out)  # the default dialect is RFC 4180's: comma, double quotes, CRLF
    writer.writerow(names)
    writer.writerows([cell(row.get(name)) for name in names] for row in rows)
    return out.getvalue()


def listing(params: Mapping[str, str], kind: str, rows: list[dict[str, Any]], usual: Sequence[str]) -> Response:
    """`{kind: rows}` as JSON, or with format=csv the same rows as a CSV download."""
    if params.get("format") != "csv":
        return JSONResponse({kind: rows})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(to_csv(rows, usual), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="billingwatch-{kind}-{stamp}.csv"',
    })
