"""The pages anyone may read: /metrics, /health and /ready (the home page is http/home.py)."""

import time
from collections.abc import Callable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from billingwatch.config import Settings
from billingwatch.detectors import Detector
from billingwatch.metrics.build_info import BuildInfo
from billingwatch.metrics.collector import SnapshotCollector
from billingwatch.store import Store, StoreUnavailable

# The *_created series double the exposition for no alerting value.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Pages:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        detectors: list[Detector],
        requests: Counter,
        clock: Callable[[], float] = time.time,
        notifications: Counter | None = None,
        detector_errors: Counter | None = None,
        imports: Counter | None = None,
    ) -> None:
        self._settings = settings
        self._imports = imports
        self._notifications = notifications
        self._detector_errors = detector_errors
        self._store = store
        self._detectors = detectors
        self._requests = requests
        self._build_info = BuildInfo(store.kind)
        self._clock = clock
        self.last_scrape: float | None = None  # when this replica last served /metrics (the home page says)

    async def metrics(self, request: Request) -> Response:
        settings = self._settings
        self.last_scrape = self._clock()
        try:
            snapshot = await self._store.snapshot(self._clock(), settings.lapse_grace, settings.subscription_ttl)
        except StoreUnavailable:
            snapshot = None
        if snapshot is not None and self._store.gate.reason is not None:
            # Redis answers but refused a write: try one again (the gate opens once one goes through).
            await self._store.can_record()
        registry = CollectorRegistry(auto_describe=False)
        pushed = tuple(c for c in (self._imports, self._notifications, self._detector_errors) if c is not None)
        for collector in (self._requests, *pushed, self._build_info,
                          SnapshotCollector(snapshot, self._detectors, settings.currencies, settings.plan_names,
                                            writable=self._store.gate.reason is None),
                          PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        try:
            encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        except (ValueError, TypeError):
            # A malformed Accept (e.g. "version=abc") gets the text format every scraper reads, not a 500.
            encoder, content_type = generate_latest, CONTENT_TYPE_LATEST
        return Response(encoder(registry), media_type=content_type)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        # Ready means an event can be recorded, not that PING answers: a Redis that refuses
        # scripts, or a cluster node that does not own the slot, answers PING too.
        reason = await self._store.can_record()
        if reason is None:
            return JSONResponse({"status": "ready", "store": self._store.kind})
        return JSONResponse({"status": "unavailable", "store": self._store.kind, "reason": reason}, status_code=503)
