"""Record Stripe events straight into a store, through the Recorder the webhook uses."""

import time
from typing import Any

from billingwatch.detectors import build_detectors
from billingwatch.recording.recorder import Recorder
from billingwatch.store import Outcome, Store

DEDUP_TTL = 35 * 86400
SUBSCRIPTION_TTL = 400 * 86400


async def record(store: Store, evt: dict[str, Any], received_at: float | None = None,
                 environ: dict[str, str] | None = None) -> Outcome:
    recorder = Recorder(store, build_detectors(environ or {}), DEDUP_TTL, SUBSCRIPTION_TTL)
    return await recorder.record(evt, received_at=received_at)


async def anomaly_count(store: Store, detector: str, livemode: str = "false") -> int:
    snapshot = await store.snapshot(time.time(), 0)
    return sum(v for k, v in snapshot.counters.items()
               if k.startswith(f"an|{detector}|") and k.endswith("|" + livemode))


async def counter(store: Store, field: str) -> int:
    return (await store.snapshot(time.time(), 0)).counters.get(field, 0)


async def gauge(store: Store, field: str) -> int:
    return (await store.snapshot(time.time(), 0)).gauges.get(field, 0)
