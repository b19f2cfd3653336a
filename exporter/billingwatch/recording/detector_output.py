"""A detector's output checked before it joins a plan, inside the detector's error guard.

A detector (often a plugin) that returns something a store cannot keep, e.g. a datetime in an
anomaly's details, fails alone: it is counted in billingwatch_detector_errors_total and the
event is recorded without its checks. Left in the plan it would fail the event at the store
(and, encoded in a shared group-commit pipeline, its neighbours), or be kept by the in-process
store and break /api/anomalies.
"""

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from billingwatch.recording.plan import Anomaly, Check

OPS = ("once", "window", "distinct", "sum")
_INT_FIELDS = ("ttl", "at", "window", "cap", "amount", "threshold")
_TEXT_FIELDS = ("detector", "severity", "event_id", "event_type", "summary")
_OPTIONAL_TEXT_FIELDS = ("customer", "charge", "invoice", "subscription", "currency")


class BadDetectorOutput(ValueError):
    """What a detector returned is not a list of well-formed checks."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _anomaly(anomaly: "Anomaly") -> "Anomaly":
    """The record with its details as plain JSON (what both stores keep); BadDetectorOutput if it has none."""
    wrong = [name for name in _TEXT_FIELDS if not isinstance(getattr(anomaly, name), str)]
    wrong += [name for name in _OPTIONAL_TEXT_FIELDS if not isinstance(getattr(anomaly, name), str | None)]
    wrong += [name for name in ("livemode", "history") if not isinstance(getattr(anomaly, name), bool)]
    wrong += [] if _is_int(anomaly.event_created) else ["event_created"]
    wrong += [] if anomaly.amount is None or _is_int(anomaly.amount) else ["amount"]
    if wrong:
        raise BadDetectorOutput(f"anomaly fields of the wrong type: {', '.join(wrong)}")
    if anomaly.details is None:
        return anomaly
    if not isinstance(anomaly.details, dict):
        raise BadDetectorOutput("anomaly details must be a dict of JSON values")
    try:
        details = json.loads(json.dumps(anomaly.details, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BadDetectorOutput(f"anomaly details are not JSON: {str(exc)[:120]}") from None
    return replace(anomaly, details=details)


def checked(output: object, check_type: type["Check"], anomaly_type: type["Anomaly"]) -> list["Check"]:
    """The detector's checks, each anomaly's details made plain JSON; BadDetectorOutput otherwise.
    plan.py passes its Check and Anomaly types: it imports this module, so this one cannot import it."""
    if not isinstance(output, list | tuple):
        raise BadDetectorOutput(f"checks() must return a list, not {type(output).__name__}")
    result = []
    for check in output:
        if not isinstance(check, check_type):
            raise BadDetectorOutput(f"checks() must return Check objects, not {type(check).__name__}")
        if check.op not in OPS or not isinstance(check.key, str) or not check.key or not isinstance(check.member, str):
            raise BadDetectorOutput("a check needs an op among " + ", ".join(OPS) + ", a key and a text member")
        if not all(_is_int(getattr(check, name)) for name in _INT_FIELDS):
            raise BadDetectorOutput(f"a check's {', '.join(_INT_FIELDS)} must be integers")
        if not isinstance(check.counters, dict) or not all(
                isinstance(k, str) and _is_int(v) for k, v in check.counters.items()):
            raise BadDetectorOutput("a check's counters must map field names to integers")
        if check.anomaly is not None:
            if not isinstance(check.anomaly, anomaly_type):
                raise BadDetectorOutput(f"a check's anomaly must be an Anomaly, not {type(check.anomaly).__name__}")
            anomaly = _anomaly(check.anomaly)
            if anomaly is not check.anomaly:  # details made plain JSON; replace() is dear on the hot path
                check = replace(check, anomaly=anomaly)
        result.append(check)
    return result
