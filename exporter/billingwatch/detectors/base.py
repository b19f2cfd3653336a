"""The detector interface.

A detector is a dataclass whose fields are its thresholds (each overridable by the environment
variable BILLINGWATCH_DETECTOR_<NAME>_<FIELD>), with a name, a severity, the event types it
reads (one that grades its findings also lists `severities`, all it can emit), and a pure
`checks` method: event → the store checks whose hits are its anomalies.
The store runs the checks atomically with the event's other updates, so detectors keep
per-customer memory without a read-modify-write race between replicas.
"""

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from billingwatch.recording.events import Event
from billingwatch.recording.plan import Anomaly, Check

Severity = Literal["critical", "high", "medium", "low"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low")


@dataclass(frozen=True)
class Context:
    state_ttl: int  # seconds detector state is kept: longer than Stripe's retries and event retention


class Detector(Protocol):
    name: ClassVar[str]
    severity: ClassVar[Severity]
    description: ClassVar[str]
    event_types: ClassVar[frozenset[str]]

    def checks(self, event: Event, context: Context) -> list[Check]: ...


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
