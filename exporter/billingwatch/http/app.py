"""The Starlette application: webhook in, metrics and a small JSON API out."""

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from billingwatch import __version__
from billingwatch.config import Settings, is_placeholder
from billingwatch.detectors import Detector, build_detectors, thresholds
from billingwatch.http.access import REFUSED, HostAllowlist, authorised, default_hosts
from billingwatch.http.limits import RequestLimits
from billingwatch.http.webhook import WebhookEndpoint
from billingwatch.metrics.build_info import BuildInfo
from billingwatch.metrics.collector import SnapshotCollector
from billingwatch.metrics.families import new_requests_counter
from billingwatch.store import Store, StoreUnavailable, open_store

log = logging.getLogger("billingwatch")

# The *_created series double the exposition for no alerting value.
disable_created_metrics()  # type: ignore[no-untyped-call]

LANDING = """<!doctype html>
<html><head><title>BillingWatch</title></head><body>
<h1>BillingWatch {version}</h1>
<p>Self-hosted monitoring of Stripe billing. Store: {store}.</p>
<ul>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="/health">/health</a> and <a href="/ready">/ready</a></li>
<li><a href="/api/detectors">/api/detectors</a>: the stateful detectors and their thresholds</li>
<li><a href="/api/anomalies">/api/anomalies</a>: recent anomalies with their details</li>
<li>POST /webhooks/stripe: the Stripe webhook endpoint</li>
</ul></body></html>
"""


def create_app(settings: Settings, store: Store | None = None, clock: Callable[[], float] = time.time) -> Starlette:
    """Build the app. Tests pass their own store and clock; `serve` lets it open the configured store."""
    store = store or open_store(settings.redis_url, settings.redis_prefix, settings.anomaly_log_size)
    detectors: list[Detector] = build_detectors(settings.detector_env)
    requests = new_requests_counter()
    webhook = WebhookEndpoint(settings, store, detectors, requests, clock)
    build_info = BuildInfo(store.kind)

    allowed_hosts = settings.allowed_hosts or default_hosts(settings.host)

    def refused() -> JSONResponse:
        return JSONResponse({"error": REFUSED}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    async def metrics(request: Request) -> Response:
        try:
            snapshot = await store.snapshot(clock(), settings.lapse_grace, settings.subscription_ttl)
        except StoreUnavailable:
            snapshot = None
        registry = CollectorRegistry(auto_describe=False)
        for collector in (requests, build_info, SnapshotCollector(snapshot, detectors, settings.currencies),
                          PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        try:
            encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        except (ValueError, TypeError):
            # A malformed Accept (e.g. "version=abc") gets the text format every scraper reads, not a 500.
            encoder, content_type = generate_latest, CONTENT_TYPE_LATEST
        return Response(encoder(registry), media_type=content_type)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        if await store.ping():
            return JSONResponse({"status": "ready", "store": store.kind})
        return JSONResponse({"status": "unavailable", "store": store.kind}, status_code=503)

    async def api_detectors(request: Request) -> Response:
        if not authorised(request, settings.api_token):
            return refused()
        return JSONResponse(
            {
                "detectors": [
                    {
                        "name": d.name,
                        "severity": d.severity,
                        "description": d.description,
                        "event_types": sorted(d.event_types),
                        "thresholds": thresholds(d),
                    }
                    for d in detectors
                ]
            }
        )

    async def api_anomalies(request: Request) -> Response:
        if not authorised(request, settings.api_token):
            return refused()
        raw_limit = request.query_params.get("limit", "100")
        # ASCII digits only and few of them: isdigit() takes "²", and int() of 5,000 digits raises.
        if not re.fullmatch(r"[0-9]{1,9}", raw_limit) or int(raw_limit) < 1:
            return JSONResponse({"error": "limit must be a positive integer"}, status_code=400)
        limit = min(int(raw_limit), settings.anomaly_log_size)
        detector = request.query_params.get("detector")
        if detector is not None and detector not in {d.name for d in detectors}:
            return JSONResponse({"error": f"unknown detector {detector!r}"}, status_code=400)
        history = request.query_params.get("history")
        if history is not None and history not in ("true", "false"):
            return JSONResponse({"error": "history must be true or false"}, status_code=400)
        filtered = detector is not None or history is not None
        try:
            records = await store.anomalies(settings.anomaly_log_size if filtered else limit)
        except StoreUnavailable:
            return JSONResponse({"error": "store unavailable"}, status_code=503)
        if filtered:
            records = [
                r for r in records
                if detector in (None, r.get("detector")) and history in (None, str(r.get("history") is True).lower())
            ][:limit]
        return JSONResponse({"anomalies": records})

    async def landing(request: Request) -> Response:
        return HTMLResponse(LANDING.format(version=__version__, store=store.kind))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if store.kind == "memory":
            log.warning("no REDIS_URL: using the in-process store; its state is neither shared nor durable")
        if settings.insecure_skip_signature:
            log.warning("signature verification is OFF (development mode); livemode events are rejected")
        log.info("answering Host names %s; /api/* %s", ", ".join(allowed_hosts),
                 "needs the bearer token" if settings.api_token else "served to direct loopback requests only")
        if any(is_placeholder(secret) for secret in settings.webhook_secrets):
            log.warning("STRIPE_WEBHOOK_SECRET holds a placeholder, not a Stripe signing secret: test mode only, "
                        "livemode events are rejected")
        yield {}
        await store.close()

    routes = [
        Route("/", landing),
        Route("/webhooks/stripe", webhook.handle, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/health", health),
        Route("/ready", ready),
        Route("/api/detectors", api_detectors),
        Route("/api/anomalies", api_anomalies),
    ]
    limits = Middleware(RequestLimits, max_header_bytes=settings.max_header_bytes,
                        max_in_flight=settings.max_connections)
    # Limits first: an oversize request is refused before anything else reads its headers.
    return Starlette(routes=routes, lifespan=lifespan,
                     middleware=[limits, Middleware(HostAllowlist, hosts=allowed_hosts)])
