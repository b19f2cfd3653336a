"""Record Stripe events straight into a store, through the same pure path the webhook uses."""

import time
from typing import Any

from billingwatch.detectors import Context, build_detectors
from billingwatch.recording.events import parse_event
from billingwatch.recording.plan import plan_event
from billingwatch.store import Outcome, Store

DEDUP_TTL = 35 * 86400
SUBSCRIPTION_TTL = 400 * 86400


async def record(store: Store, evt: dict[str, Any], received_at: float | None = None,
                 environ: dict[str, str] | None = None) -> Outcome:
    event = parse_event(evt)
    plan = plan_event(
        event,
        received_at=received_at if received_at is not None else time.time(),
        detectors=build_detectors(environ or {}),
        context=Context(state_ttl=DEDUP_TTL),
        dedup_ttl=DEDUP_TTL,
        subscription_ttl=SUBSCRIPTION_TTL,
    )
    return await store.apply(plan)


async def anomaly_count(store: Store, detector: str, livemode: str = "false") -> int:
    snapshot = await store.snapshot(time.time(), 0)
    return sum(v for k, v in snapshot.counters.items()
               if k.startswith(f"an|{detector}|") and k.endswith("|" + livemode))


async def counter(store: Store, field: str) -> int:
    return (await store.snapshot(time.time(), 0)).counters.get(field, 0)


async def gauge(store: Store, field: str) -> int:
    return (await store.snapshot(time.time(), 0)).gauges.get(field, 0)
