"""The one path from a Stripe event to the store: parse → plan → apply.

The webhook, `billingwatch replay --direct`, `backfill` and `reconcile --replay` all record
through it, so an event counts the same however it arrives.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from billingwatch.config import Settings
from billingwatch.detectors import Context, Detector, build_detectors
from billingwatch.recording.events import Event, parse_event
from billingwatch.recording.plan import Plan, plan_event
from billingwatch.store import Outcome, Store


@dataclass
class Recorder:
    store: Store
    detectors: list[Detector]
    dedup_ttl: int
    subscription_ttl: int
    clock: Callable[[], float] = time.time
    max_clock_skew: int = 300  # how far after its receipt an event's created time may lie
    context: Context = field(init=False)

    def __post_init__(self) -> None:
        self.context = Context(state_ttl=self.dedup_ttl)

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, clock: Callable[[], float] = time.time) -> "Recorder":
        return cls(store, build_detectors(settings.detector_env), settings.dedup_ttl, settings.subscription_ttl, clock,
                   settings.signature_tolerance)

    def plan(self, event: Event, received_at: float | None = None, replayed: bool = False) -> Plan:
        """Raises InvalidEvent for an event that parses but cannot be recorded."""
        return plan_event(
            event,
            received_at=self.clock() if received_at is None else received_at,
            detectors=self.detectors,
            context=self.context,
            dedup_ttl=self.dedup_ttl,
            subscription_ttl=self.subscription_ttl,
            replayed=replayed,
            max_clock_skew=self.max_clock_skew,
        )

    async def record(self, document: Any, replayed: bool = False) -> Outcome:
        """Record one decoded Stripe event. Raises InvalidEvent, Unrecordable (nothing written) or
        StoreUnavailable; a duplicate is no error."""
        return await self.store.apply(self.plan(parse_event(document), replayed=replayed))
