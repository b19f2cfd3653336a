"""The pages anyone may read: /metrics, /health and /ready (the home page is http/home.py)."""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from billingwatch.config import Settings
from billingwatch.detectors import Detector
from billingwatch.metrics.accounts import AccountLabelled
from billingwatch.metrics.build_info import BuildInfo
from billingwatch.metrics.collector import SnapshotCollector
from billingwatch.store import Store, StoreUnavailable

# The *_created series double the exposition for no alerting value.
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class AccountMetrics:
    """What /metrics reads for one account: its store and its webhook's counters."""

    name: str
    store: Store
    requests: Counter
    detector_errors: Counter | None = None
    imports: Counter | None = None  # POST /api/import


class Pages:
    def __init__(
        self,
        settings: Settings,
        accounts: Sequence[AccountMetrics],
        detectors: list[Detector],
        clock: Callable[[], float] = time.time,
        notifications: Counter | None = None,
    ) -> None:
        self._settings = settings
        self._notifications = notifications
        self._accounts = list(accounts)
        self._detectors = detectors
        self._build_info = BuildInfo(self._accounts[0].store.kind)
        self._clock = clock
        self.last_scrape: float | None = None  # when this replica last served /metrics (the home page says)

    async def _collectors(self, account: AccountMetrics) -> list[Collector]:
        settings, store = self._settings, account.store
        try:
            snapshot = await store.snapshot(self._clock(), settings.lapse_grace, settings.subscription_ttl)
        except StoreUnavailable:
            snapshot = None
        if snapshot is not None and store.gate.reason is not None:
            # Redis answers but refused a write: try one again (the gate opens once one goes through).
            await store.can_record()
        counters = tuple(c for c in (account.requests, account.detector_errors, account.imports) if c is not None)
        return [*counters, SnapshotCollector(snapshot, self._detectors, settings.currencies, settings.plan_names,
                                             writable=store.gate.reason is None)]

    async def metrics(self, request: Request) -> Response:
        self.last_scrape = self._clock()
        # Every account's families with its account label (metrics/accounts.py); the process's own
        # figures (build info, pushed alerts, the Python runtime) once, without one.
        accounts = [(account.name, await self._collectors(account)) for account in self._accounts]
        registry = CollectorRegistry(auto_describe=False)
        pushed = (self._notifications,) if self._notifications is not None else ()
        for collector in (AccountLabelled(accounts), *pushed, self._build_info,
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
        # scripts, or a cluster node that does not own the slot, answers PING too. Every
        # account's store: one that cannot record would answer its webhook 503.
        kind = self._accounts[0].store.kind
        for account in self._accounts:
            reason = await account.store.can_record()
            if reason is not None:
                named = f"account {account.name}: {reason}" if len(self._accounts) > 1 else reason
                return JSONResponse({"status": "unavailable", "store": kind, "reason": named}, status_code=503)
        return JSONResponse({"status": "ready", "store": kind})
