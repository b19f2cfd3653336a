"""The quarantine: a signed Stripe event that our parser, planner or store refuses is kept, not lost.

Stripe retries a refused event for three days, then drops it, and disables an endpoint that keeps
failing: one unexpected field in a new API version would blind BillingWatch when billing changes.
So a trusted request (signature verified, or replay-authorised) whose body is a Stripe event
envelope is kept whole in a bounded quarantine, with its dedup key written in the same atomic
step (a redelivery is a duplicate), answered 2xx, and re-recorded later by `billingwatch
requeue` (recording/requeue.py). A quarantined event moves no counter but its own two.
"""

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from billingwatch.metrics import families as fam
from billingwatch.metrics import fields
from billingwatch.metrics.labels import event_type_label, livemode_label
from billingwatch.recording.events import is_id
from billingwatch.recording.plan import LogEntry, rejected_entry

# The envelope every Stripe event has (recording/events.py parse_event checks the same fields).
_EVENT_TYPE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+){1,4}$")
_MAX_CREATED = 10**15
# The store's schemes of the per-mode fields a drop or a release moves ({livemode} filled in there).
LIVEMODE_SLOT = "{livemode}"
DROPPED_SCHEME = fields.field(fam.QUARANTINE_DROPPED, LIVEMODE_SLOT)
ENTRIES_SCHEME = fields.field(fam.QUARANTINE_ENTRIES, LIVEMODE_SLOT)


@dataclass(frozen=True)
class Envelope:
    """What any Stripe event says about itself, whatever its object holds."""

    id: str
    type: str
    created: int
    livemode: bool


@dataclass(frozen=True)
class Quarantine:
    """One event to keep, for a store to write atomically with its dedup key."""

    event_id: str
    livemode: str  # "true"/"false", as in Plan: the same dedup key a recorded event has
    dedup_ttl: int
    entry: dict[str, Any]  # what /api/quarantine and the explorer show
    body: str  # the body as signed, kept apart from the entry: requeue re-records it
    counter: str  # the billingwatch_events_quarantined_total field it moves
    log: LogEntry  # its recent-events log line (result "quarantined")

    @property
    def member(self) -> str:
        """Its name in the quarantine: live and test ids never share one."""
        return member(self.livemode, self.event_id)


def member(livemode: str, event_id: str) -> str:
    return f"{livemode}:{event_id}"


def envelope(document: Any) -> Envelope | None:
    """The document's Stripe event envelope (object "event", id, type, created, livemode), else None.

    livemode is part of it: without it there is no telling which mode's dedup key and counters
    the event belongs to, nor whether a test-mode-only exporter may keep it.
    """
    if not isinstance(document, Mapping) or document.get("object") != "event":
        return None
    event_id, event_type = document.get("id"), document.get("type")
    created, livemode = document.get("created"), document.get("livemode")
    if not is_id(event_id) or not isinstance(event_type, str) or len(event_type) > 80 or not _EVENT_TYPE.match(
            event_type):
        return None
    if isinstance(created, bool) or not isinstance(created, int) or not 0 < created <= _MAX_CREATED:
        return None
    if not isinstance(livemode, bool):
        return None
    return Envelope(str(event_id), event_type, created, livemode)


def quarantine(event: Envelope, document: Any, payload: str, reason: str, *, received_at: float, history: bool,
               dedup_ttl: int, detector_event_types: Iterable[frozenset[str]]) -> Quarantine:
    """The quarantine record of a trusted event refused with `reason`."""
    mode = livemode_label(event.livemode)
    type_label = event_type_label(event.type, detector_event_types)
    entry = {
        "id": event.id, "type": event.type, "created": event.created, "livemode": event.livemode,
        "received": received_at, "history": history, "reason": reason[:300],
    }
    return Quarantine(
        event_id=event.id, livemode=mode, dedup_ttl=dedup_ttl, entry=entry, body=payload,
        counter=fields.field(fam.QUARANTINED, type_label, mode),
        log=rejected_entry(document, reason, received_at, history),
    )


def encoded(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"))
