"""Requeue: re-record quarantined events through the one Recorder, exactly once, and release them.

A quarantined event keeps the time it was received, and whether it came live or as history
(replay): it is recorded as it would have been had this version accepted it then. A live
delivery therefore counts live (its lag sample is its real delivery lag), so live counters take
it when it is requeued; docs/events.md says why. Each entry is recorded with the requeue flag
(its quarantine mark on the dedup key is no duplicate, a recorded key still is), then released:
two requeues at once, or one interrupted between the two steps, still count it once.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from billingwatch.recording.events import InvalidEvent
from billingwatch.recording.recorder import Recorder
from billingwatch.store import Unrecordable


@dataclass
class RequeueResult:
    recorded: int = 0  # recorded now
    duplicates: int = 0  # recorded before (a redelivery after an upgrade, or another requeue): released
    anomalies: int = 0
    kept: list[dict[str, Any]] = field(default_factory=list)  # still unrecordable: id, type, reason

    def as_dict(self) -> dict[str, Any]:
        return {"recorded": self.recorded, "duplicates": self.duplicates, "anomalies": self.anomalies,
                "kept": self.kept}


async def requeue(recorder: Recorder, limit: int) -> RequeueResult:
    """Re-record up to `limit` quarantined events, oldest first. Raises StoreUnavailable (what
    was done stands: a rerun goes on from there)."""
    result = RequeueResult()
    for entry in await recorder.store.quarantined(limit, bodies=True):
        reason = await _record(recorder, entry, result)
        if reason is None:
            await recorder.store.release("true" if entry["livemode"] else "false", entry["id"])
        else:
            result.kept.append({"id": entry["id"], "type": entry["type"], "reason": reason[:300]})
    return result


async def _record(recorder: Recorder, entry: dict[str, Any], result: RequeueResult) -> str | None:
    """Record one entry; None when it is recorded (now or before), else why it still is not."""
    try:
        outcome = await recorder.record(json.loads(entry["body"]), received_at=float(entry["received"]),
                                        history=bool(entry["history"]), requeue=True)
    except InvalidEvent as exc:
        return str(exc)
    except Unrecordable as exc:
        return f"event cannot be recorded: {exc}"
    if outcome.duplicate:
        result.duplicates += 1
    else:
        result.recorded += 1
        result.anomalies += len(outcome.anomalies)
    return None
