"""Record Stripe events straight into a store, through the same pure path the webhook uses."""

import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from billingwatch.detectors import Context, build_detectors
from billingwatch.metrics.collector import SnapshotCollector
from billingwatch.recording.events import parse_event
from billingwatch.recording.ledger import plan_event
from billingwatch.recording.plan import Outcome
from billingwatch.store import Store
from tests.metrics import Samples, parse, total

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


async def figures(store: Store, now: float | None = None, grace: int = 0) -> Samples:
    """The store's figures as /metrics shows them, by metric name and labels: its snapshot rendered
    by the exporter's own collector (so tests never read the store's field encoding)."""
    registry = CollectorRegistry(auto_describe=False)
    snapshot = await store.snapshot(now if now is not None else time.time(), grace)
    registry.register(SnapshotCollector(snapshot, build_detectors({})))
    return parse(generate_latest(registry).decode())


async def anomaly_count(store: Store, detector: str, livemode: str = "false") -> float:
    return total(await figures(store), "billingwatch_anomalies_total", detector=detector, livemode=livemode)


async def counter(store: Store, field: str) -> int:
    """A counter a test's own Plan names (x|...), for the store's mechanics; product figures: figures()."""
    return (await store.snapshot(time.time(), 0)).counters.get(field, 0)
