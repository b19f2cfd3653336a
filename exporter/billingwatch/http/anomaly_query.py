"""The /anomalies query: filters, a human time range and a cursor, parsed from the URL, and the
selection of one page of the anomaly log.

The URL contract (Grafana's data links build it too): /anomalies?detector=&severity=&priority=&
livemode=true|false&customer=&range=1h|24h|7d&from=&to=&cursor=. An empty value is no filter (an
HTML form sends its empty fields). `severity` is critical|warning|info and `priority` P1..P4, as the
metric and the alerts label them; a former level name (severity=high) is read as its priority.
`from`/`to` are ISO 8601 dates or datetimes (Grafana's ${__from:date:iso}); when either is
given, `range` is not used. Times are the Stripe event time of the event that raised the
anomaly. The cursor is the stable id of the last anomaly of the previous page: new anomalies
arrive at the top of the log, so the next page does not shift.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from billingwatch.anomaly_ref import anomaly_id
from billingwatch.levels import ALERT_SEVERITIES, LEVELS, PRIORITIES, PRIORITY_OF_LEVEL

RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
DEFAULT_RANGE = "7d"  # wide enough for a week of findings; the log is bounded anyway
PAGE_SIZE = 25
ID = re.compile(r"[a-z][a-z0-9_]{0,47}-[0-9a-f]{16}")
CUSTOMER_LONGEST = 255


@dataclass(frozen=True)
class AnomalyQuery:
    detector: str | None = None
    severity: str | None = None
    priority: str | None = None
    livemode: bool | None = None
    customer: str | None = None
    range: str | None = None  # one of RANGES; None: DEFAULT_RANGE unless from/to is given
    start: int | None = None  # from, unix seconds, inclusive
    end: int | None = None  # to, unix seconds, exclusive
    start_text: str = ""  # from and to as given, for the form and the links
    end_text: str = ""
    cursor: str | None = None
    limit: int = PAGE_SIZE

    def window(self, now: float) -> tuple[float, float]:
        """[lo, hi) in unix seconds."""
        if self.start is not None or self.end is not None:
            return (float("-inf") if self.start is None else self.start,
                    float("inf") if self.end is None else self.end)
        return now - RANGES[self.range or DEFAULT_RANGE], float("inf")

    def matches(self, record: Mapping[str, Any], lo: float, hi: float) -> bool:
        created = record.get("event_created")
        return (
            self.detector in (None, record.get("detector"))
            and self.severity in (None, record.get("severity"))
            and self.priority in (None, record.get("priority"))
            and (self.livemode is None or (record.get("livemode") is True) == self.livemode)
            and self.customer in (None, record.get("customer"))
            and isinstance(created, int) and lo <= created < hi
        )

    def params(self) -> dict[str, str]:
        """The filters as URL parameters (no cursor): for the form, the page links and the next page."""
        given = {
            "detector": self.detector or "",
            "severity": self.severity or "",
            "priority": self.priority or "",
            "livemode": "" if self.livemode is None else str(self.livemode).lower(),
            "customer": self.customer or "",
            "range": self.range or "",
            "from": self.start_text,
            "to": self.end_text,
        }
        return {k: v for k, v in given.items() if v}


def parse_time(text: str, end: bool) -> int | None:
    """An ISO 8601 date or datetime as unix seconds; a date as `to` means the end of that day.
    A datetime without an offset is UTC. None when it is not one."""
    if len(text) > 40 or not text.isascii():
        return None
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            day = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
            return int((day + timedelta(days=1 if end else 0)).timestamp())
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def parse_query(params: Mapping[str, str], detectors: Iterable[str]) -> AnomalyQuery | str:
    """The query, or a one-line reason it is refused."""
    detector = params.get("detector") or None
    if detector is not None and detector not in set(detectors):
        return f"unknown detector {detector!r}"
    severity = params.get("severity") or None
    priority = params.get("priority") or None
    if severity is not None and severity in LEVELS[1:] and priority is None:
        priority, severity = PRIORITY_OF_LEVEL[severity], None  # an older link (severity=high): its priority
    if severity is not None and severity not in ALERT_SEVERITIES:
        return f"severity must be one of {', '.join(ALERT_SEVERITIES)}"
    if priority is not None and priority not in PRIORITIES:
        return f"priority must be one of {', '.join(PRIORITIES)}"
    livemode_text = params.get("livemode") or None
    if livemode_text not in (None, "true", "false"):
        return "livemode must be true or false"
    customer = params.get("customer") or None
    if customer is not None and (len(customer) > CUSTOMER_LONGEST or not (customer.isascii()
                                                                          and customer.isprintable())):
        return f"customer must be at most {CUSTOMER_LONGEST} printable characters"
    range_ = params.get("range") or None
    if range_ is not None and range_ not in RANGES:
        return f"range must be one of {', '.join(RANGES)}"
    times: dict[str, int | None] = {}
    for name in ("from", "to"):
        text = params.get(name) or ""
        times[name] = parse_time(text, end=name == "to") if text else None
        if text and times[name] is None:
            return f"{name} must be an ISO 8601 date or datetime, e.g. 2026-12-01 or 2026-12-01T09:30:00Z"
    start, end = times["from"], times["to"]
    if start is not None and end is not None and start >= end:
        return "from must be before to"
    cursor = params.get("cursor") or None
    if cursor is not None and not ID.fullmatch(cursor):
        return "cursor must be an anomaly id from a previous page"
    livemode = None if livemode_text is None else livemode_text == "true"
    return AnomalyQuery(detector, severity, priority, livemode, customer, range_, start, end,
                        params.get("from") or "", params.get("to") or "", cursor)


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]
    next_cursor: str | None  # the cursor of the next page; None on the last one
    cursor_lost: bool = False  # the cursor's anomaly has left the log: start again from the newest


def select(records: Sequence[dict[str, Any]], query: AnomalyQuery, now: float) -> Page:
    """One page of the log (newest first) for the query."""
    lo, hi = query.window(now)
    start = 0
    if query.cursor is not None:
        at = next((i for i, r in enumerate(records) if anomaly_id(r) == query.cursor), None)
        if at is None:
            return Page([], None, cursor_lost=True)
        start = at + 1
    found: list[dict[str, Any]] = []
    for record in records[start:]:
        if query.matches(record, lo, hi):
            if len(found) == query.limit:
                return Page(found, anomaly_id(found[-1]))
            found.append(record)
    return Page(found, None)
