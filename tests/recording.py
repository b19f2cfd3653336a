"""Record Stripe events straight into a store, through the Recorder the webhook uses."""

import time
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from billingwatch.detectors import build_detectors
from billingwatch.metrics.collector import SnapshotCollector
from billingwatch.recording.recorder import Recorder
from billingwatch.store import Outcome, Store
from tests.metrics import Samples, parse, total

DEDUP_TTL = 35 * 86400
SUBSCRIPTION_TTL = 400 * 86400


async def record(store: Store, evt: dict[str, Any], received_at: float | None = None,
                 environ: dict[str, str] | None = None) -> Outcome:
    recorder = Recorder(store, build_detectors(environ or {}), DEDUP_TTL, SUBSCRIPTION_TTL)
    return await recorder.record(evt, received_at=received_at)


async def figures(store: Store, now: float | None = None, grace: int = 0) -> Samples:
    """The store's figures as /metrics shows them, by metric name and labels: its snapshot rendered
    by the exporter's own collector (so tests never read the store's field encoding)."""
    registry = CollectorRegistry(auto_describe=False)
    snapshot = await store.snapshot(now if now is not None else time.time(), grace)
    # Without the Redis server's memory figures: the store's state alone, the same on both stores.
    registry.register(SnapshotCollector(replace(snapshot, memory=None), build_detectors({})))
    return parse(generate_latest(registry).decode())


async def anomaly_count(store: Store, detector: str, livemode: str = "false") -> float:
    return total(await figures(store), "billingwatch_anomalies_total", detector=detector, livemode=livemode)


async def counter(store: Store, field: str) -> int:
    """A counter a test's own Plan names (x|...), for the store's mechanics; product figures: figures()."""
    return (await store.snapshot(time.time(), 0)).counters.get(field, 0)
