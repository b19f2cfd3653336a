"""The one entry from a Stripe event to the store: parse → plan → apply.

The webhook, `billingwatch replay --direct`, `backfill`, `reconcile` and the tests and benchmarks
all record through Recorder.record, so an event counts the same however it arrives.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from billingwatch.config import Settings
from billingwatch.detectors import Context, Detector, build_detectors
from billingwatch.recording.events import Event, InvalidEvent, parse_event
from billingwatch.recording.lean_plan import LeanPlanner
from billingwatch.recording.plan import Plan, missed_event_plan, plan_event, rejected_entry
from billingwatch.store import Outcome, RedisStore, Store, StoreUnavailable, Unrecordable
from billingwatch.store.batch_args import EventArgs
from billingwatch.store.group_commit import GroupCommit


class LivemodeRejected(Exception):
    """A livemode event where only test-mode events may be recorded; nothing was written."""


@dataclass
class Recorder:
    store: Store
    detectors: list[Detector]
    dedup_ttl: int
    subscription_ttl: int
    clock: Callable[[], float] = time.time
    max_clock_skew: int = 300  # how far after its receipt an event's created time may lie
    plans: Mapping[str, str] = field(default_factory=dict)  # price or product id → plan name (MRR by plan)
    # The webhook's Redis store: concurrent record() calls share one round trip (store/group_commit.py).
    group_commit: GroupCommit | None = None
    context: Context = field(init=False)
    # The common types planned without the generic path (recording/lean_plan.py); plan_event for the rest.
    lean: LeanPlanner = field(init=False)

    def __post_init__(self) -> None:
        self.context = Context(state_ttl=self.dedup_ttl)
        self.lean = LeanPlanner(self.detectors, self.context, self.dedup_ttl, self.max_clock_skew)

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, clock: Callable[[], float] = time.time) -> "Recorder":
        return cls(store, build_detectors(settings.detector_env), settings.dedup_ttl, settings.subscription_ttl, clock,
                   settings.signature_tolerance, settings.plans)

    async def record(
        self,
        event: Event | Any,
        *,
        received_at: float | None = None,
        history: bool = False,
        live_allowed: bool = True,
        requeue: bool = False,
    ) -> Outcome:
        """Record one Stripe event: an Event, or a decoded document to parse first.

        `history`: a replayed event (state, no live counter; see plan_event). `live_allowed`
        False refuses a livemode event. `requeue`: a quarantined event, recorded now (its
        quarantine mark is no duplicate). Raises InvalidEvent, LivemodeRejected, Unrecordable
        (all with nothing written) or StoreUnavailable; a duplicate is no error.
        """
        plan = self._plan(event, self.clock() if received_at is None else received_at, history, live_allowed)
        if requeue:
            plan = replace(plan, requeue=True)
        apply = self.store.apply if self.group_commit is None else self.group_commit.apply
        return _with_failures(await apply(plan), plan)

    async def record_many(
        self, events: Sequence[Event | Any], *, history: bool = True, live_allowed: bool = True,
    ) -> list[Outcome | InvalidEvent | LivemodeRejected | Unrecordable | StoreUnavailable]:
        """Record a batch (replay, backfill): each event as record() would, planned here and applied
        in one store batch (one round trip to Redis), each still atomic on its own. One entry per
        event, in order: its outcome, or the error record() would raise for it. StoreUnavailable
        entries may be recorded again (one that did run comes back a duplicate)."""
        received_at = self.clock()
        results: list[Outcome | InvalidEvent | LivemodeRejected | Unrecordable | StoreUnavailable] = []
        planned: list[tuple[int, Plan | EventArgs]] = []
        # Redis: the common types go as the batch script's arguments, written without a Plan.
        prefix = self.store.prefix if isinstance(self.store, RedisStore) else None
        for event in events:
            try:
                args = None if prefix is None or isinstance(event, Event) else self.lean.event_args(
                    event, received_at, history, prefix, live_allowed)
                planned.append((len(results), args or self._plan(event, received_at, history, live_allowed)))
                results.append(StoreUnavailable("not applied"))  # replaced below
            except (InvalidEvent, LivemodeRejected) as exc:
                results.append(exc)
        items = [item for _, item in planned]
        if not items:
            applied: list[Outcome | Unrecordable | StoreUnavailable] = []
        elif isinstance(self.store, RedisStore):
            applied = await self.store.apply_many(items)
        else:  # no EventArgs without Redis
            applied = await self.store.apply_many([item for item in items if isinstance(item, Plan)])
        for (index, item), result in zip(planned, applied, strict=True):
            results[index] = (_with_failures(result, item) if isinstance(result, Outcome) and isinstance(item, Plan)
                              else result)
        return results

    def _plan(self, event: Event | Any, received_at: float, history: bool, live_allowed: bool) -> Plan:
        # The lean plan is plan_event's for the documents it takes (tests/test_lean_plan.py); for the
        # others it is None, and plan_event plans or refuses them.
        lean = None if isinstance(event, Event) else self.lean.plan(event, received_at, history)
        if lean is not None:
            if lean.livemode == "true" and not live_allowed:
                raise LivemodeRejected(lean.event_id)
            return lean
        parsed = event if isinstance(event, Event) else parse_event(event)
        if parsed.livemode and not live_allowed:
            raise LivemodeRejected(parsed.id)
        return plan_event(
            parsed,
            received_at=received_at,
            detectors=self.detectors,
            context=self.context,
            dedup_ttl=self.dedup_ttl,
            subscription_ttl=self.subscription_ttl,
            history=history,
            max_clock_skew=self.max_clock_skew,
            plans=self.plans,
        )

    async def log_rejected(self, document: Any, reason: str, *, received_at: float | None = None,
                           history: bool = False) -> None:
        """Put a signed event refused before the store (malformed, livemode not allowed, refused by
        the store's checks) in the recent-events log, with its reason. Raises StoreUnavailable."""
        received = self.clock() if received_at is None else received_at
        await self.store.log_rejected(rejected_entry(document, reason, received, history))

    async def record_missed(self, event_id: str, livemode: bool) -> Outcome:
        """Count an event Stripe sent that never arrived (reconcile), once however often it is found."""
        return await self.store.apply(missed_event_plan(event_id, livemode, self.dedup_ttl))


def _with_failures(outcome: Outcome, plan: Plan) -> Outcome:
    """The detectors that failed while planning, on a recorded (not duplicate) event's outcome."""
    if plan.failed_detectors and not outcome.duplicate:
        return replace(outcome, failed_detectors=plan.failed_detectors)
    return outcome
