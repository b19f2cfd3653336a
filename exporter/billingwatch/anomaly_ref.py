"""How an anomaly is named and linked: its stable id and the /anomalies URLs.

The id is derived from what the detector itself put in the record (detector, livemode, the
triggering event and the summary), never from where the record is stored: the same finding has
the same id on Redis and in process, across restarts and replicas, so a link in an alert, a
digest or a bookmark keeps working. The summary is part of it because one event can trip two
checks of the same detector (large_refund: one refund and the customer's sum).
"""

import hashlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

ID_LENGTH = 16  # hex characters after the detector name: 64 bits, no collision in a bounded log


def anomaly_id(record: Mapping[str, Any]) -> str:
    """'<detector>-<16 hex>', e.g. 'duplicate_charge-3f9a0c2e51b7d844'."""
    detector = str(record.get("detector", ""))
    livemode = "true" if record.get("livemode") is True else "false"
    parts = (detector, livemode, str(record.get("event_id", "")), str(record.get("summary", "")))
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:ID_LENGTH]
    return f"{detector}-{digest}"


def anomaly_path(record: Mapping[str, Any]) -> str:
    """The page of one anomaly."""
    return "/anomalies/" + anomaly_id(record)


def anomalies_path(**filters: str | None) -> str:
    """The /anomalies list with these filters (detector, severity, priority, livemode, customer, range, from, to)."""
    given = {name.rstrip("_"): value for name, value in filters.items() if value}
    return "/anomalies" + ("?" + urlencode(given) if given else "")
