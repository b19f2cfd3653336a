"""The detector interface.

A detector is a dataclass whose fields are its thresholds (each overridable by the environment
variable BILLINGWATCH_DETECTOR_<NAME>_<FIELD>), with a name, a severity, the event types it
reads (one that grades its findings also lists `severities`, all it can emit), and a pure
`checks` method: event → the store checks whose hits are its anomalies.
The store runs the checks atomically with the event's other updates, so detectors keep
per-customer memory without a read-modify-write race between replicas.

Built-in and plugin detectors (docs/detectors.md) are checked alike at start-up
(check_detector_class): a malformed one is a one-line ConfigError, never a traceback later.
"""

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from billingwatch.config import DAY, ConfigError
from billingwatch.detectors.per_currency import PerCurrency
from billingwatch.levels import LEVELS, Level
from billingwatch.recording.events import Event
from billingwatch.recording.plan import Anomaly, Check

# A detector's level, named as the store keeps it: critical, high, medium, low (= P1..P4; the
# metrics and alerts show it as severity critical/warning/info plus priority, billingwatch/levels.py).
Severity = Level
SEVERITIES: tuple[Severity, ...] = LEVELS


@dataclass(frozen=True)
class Context:
    state_ttl: int  # seconds detector state is kept: longer than Stripe's retries and event retention


class Detector(Protocol):
    name: ClassVar[str]
    severity: ClassVar[Severity]
    description: ClassVar[str]
    event_types: ClassVar[frozenset[str]]

    def checks(self, event: Event, context: Context) -> list[Check]: ...


# A detector name is a label value, a store-key part and an environment-variable part.
NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")
# A Stripe event type ("charge.succeeded", "radar.early_fraud_warning.created"); it becomes a
# value of billingwatch_events_total's `type` label, so the shape and the count are bounded.
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,4}")
MAX_EVENT_TYPES = 32


def threshold_maximum(field_name: str) -> int:
    """Ten years in the field's unit: a window or memory longer than that is a typo, not a setting."""
    if field_name.endswith("_days"):
        return 3650
    if field_name.endswith("_seconds"):
        return 3650 * DAY
    if field_name.endswith("_percent"):
        return 100
    return 10**6


def check_detector_class(cls: Any, origin: str) -> None:
    """Refuse a class that does not keep the Detector contract; `origin` says where it came from."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{origin}: name must match {NAME.pattern} (a label value), got {name!r}")
    where = f"detector {name} ({origin})"
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
        raise ConfigError(f"{where}: must be a dataclass (its int fields are its thresholds)")
    if getattr(cls, "severity", None) not in SEVERITIES:
        raise ConfigError(f"{where}: severity must be one of {', '.join(SEVERITIES)}, "
                          f"got {getattr(cls, 'severity', None)!r}")
    if not set(severities(cls)) <= set(SEVERITIES):
        raise ConfigError(f"{where}: severities must be among {', '.join(SEVERITIES)}, got {severities(cls)!r}")
    if not isinstance(getattr(cls, "description", None), str):
        raise ConfigError(f"{where}: description must be a string")
    types = getattr(cls, "event_types", None)
    if not isinstance(types, frozenset) or not types or len(types) > MAX_EVENT_TYPES:
        raise ConfigError(f"{where}: event_types must be a frozenset of 1 to {MAX_EVENT_TYPES} Stripe event types")
    unreadable = sorted(repr(t) for t in types if not isinstance(t, str) or not EVENT_TYPE.fullmatch(t))
    if unreadable:
        raise ConfigError(f"{where}: event_types: not Stripe event types such as 'charge.succeeded': "
                          + ", ".join(unreadable))
    if not callable(getattr(cls, "checks", None)):
        raise ConfigError(f"{where}: has no checks(event, context) method")
    for f in dataclasses.fields(cls):
        if isinstance(f.default, PerCurrency):
            continue  # per-currency amounts, parsed and checked by PerCurrency itself
        if f.type not in (int, "int") or not isinstance(f.default, int) or isinstance(f.default, bool):
            raise ConfigError(f"{where}: threshold {f.name} must be an int field with a default")
        if not 1 <= f.default <= threshold_maximum(f.name):
            raise ConfigError(f"{where}: threshold {f.name} default must be 1..{threshold_maximum(f.name)}")


def severities(detector: Detector | type[Any]) -> tuple[str, ...]:
    """Every severity the detector can emit: its class-level `severities` if it grades its
    findings, else its one `severity`. Each gets a billingwatch_anomalies_total series at 0."""
    graded: tuple[str, ...] = getattr(detector, "severities", ())
    return graded or (detector.severity,)


def anomaly(detector: Detector, event: Event, summary: str, severity: Severity | None = None,
            **details: Any) -> Anomaly:
    """The anomaly record `detector` emits for `event`; details are the ids and amounts involved.
    `severity`: a graded finding's own (one of the detector's `severities`), else the detector's."""
    return Anomaly(
        detector=detector.name,
        severity=severity or detector.severity,
        livemode=event.livemode,
        event_id=event.id,
        event_type=event.type,
        event_created=event.created,
        summary=summary,
        **details,
    )
