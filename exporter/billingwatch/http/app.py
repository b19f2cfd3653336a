"""The Starlette application: the route table, its middleware and lifespan."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from billingwatch.config import Settings, is_placeholder
from billingwatch.detectors import Detector, build_detectors
from billingwatch.http.access import HostAllowlist, default_hosts
from billingwatch.http.anomaly_pages import AnomalyPages
from billingwatch.http.api import Api
from billingwatch.http.apidocs import ApiDocs
from billingwatch.http.explorer import Explorer
from billingwatch.http.home import Home
from billingwatch.http.import_api import ImportApi
from billingwatch.http.limits import RequestLimits
from billingwatch.http.pages import Pages
from billingwatch.http.quarantine_api import QuarantineApi
from billingwatch.http.sign_in import SignIn, Verifier
from billingwatch.http.views import STYLESHEET, stylesheet
from billingwatch.http.webhook import WebhookEndpoint
from billingwatch.metrics.families import (
    new_detector_errors_counter,
    new_import_requests_counter,
    new_requests_counter,
)
from billingwatch.notify.alertmanager import AlertSender, push_settings, redacted
from billingwatch.store import Store, layout_upkeep, open_store

log = logging.getLogger("billingwatch")


def create_app(settings: Settings, store: Store | None = None, clock: Callable[[], float] = time.time) -> Starlette:
    """Build the app. Tests pass their own store and clock; `serve` lets it open the configured store."""
    store = store or open_store(settings.redis_url, settings.redis_prefix, settings.anomaly_log_size,
                                settings.redis_wait_replicas, settings.redis_wait_timeout_ms,
                                event_log_size=settings.event_log_size, quarantine_size=settings.quarantine_size,
                                allow_eviction=settings.redis_allow_eviction)
    detectors: list[Detector] = build_detectors(settings.detector_env)
    requests = new_requests_counter()
    sender = AlertSender(push_settings(settings))
    detector_errors = new_detector_errors_counter(d.name for d in detectors)
    webhook = WebhookEndpoint(settings, store, detectors, requests, clock, sender, detector_errors)
    imports = new_import_requests_counter()
    pages = Pages(settings, store, detectors, requests, clock, sender.counter, detector_errors, imports)
    api = Api(settings, store, detectors)
    quarantine = QuarantineApi(settings, webhook.recorder)
    importer = ImportApi(settings, webhook.recorder, imports)
    explorer = Explorer(settings, store)
    anomaly_pages = AnomalyPages(settings, store, detectors, clock)
    home = Home(settings, store, detectors, sender, lambda: pages.last_scrape, clock)
    docs = ApiDocs([d.name for d in detectors])
    allowed_hosts = settings.allowed_hosts or default_hosts(settings.host)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if store.kind == "memory":
            log.warning("no REDIS_URL: using the in-process store; its state is neither shared nor durable")
        if settings.insecure_skip_signature:
            log.warning("signature verification is OFF (development mode); livemode events are rejected")
        users = settings.web_config.users if settings.web_config else {}
        log.info("answering Host names %s; /api/* %s", ", ".join(allowed_hosts),
                 "needs sign-in (BILLINGWATCH_WEB_CONFIG_FILE) or the bearer token" if users
                 else "needs the bearer token" if settings.api_token else "served to direct loopback requests only")
        for warning in settings.web_config.warnings if settings.web_config else ():
            log.warning("BILLINGWATCH_WEB_CONFIG_FILE: %s", warning)
        if users:
            log.info("sign-in required for %d user%s on everything but POST /webhooks/stripe, /health and /ready",
                     len(users), "" if len(users) == 1 else "s")
        if any(is_placeholder(secret) for secret in settings.webhook_secrets):
            log.warning("STRIPE_WEBHOOK_SECRET holds a placeholder, not a Stripe signing secret: test mode only, "
                        "livemode events are rejected")
        if sender.enabled:
            log.info("pushing live anomalies to Alertmanager at %s",
                     ", ".join(redacted(url) for url in settings.alertmanager_urls))
        await sender.start()
        upkeep = asyncio.create_task(layout_upkeep.in_background(store))  # store/layout_upkeep.py
        yield {}
        upkeep.cancel()
        await sender.stop()
        await store.close()

    routes = [
        Route("/", home.page),
        Route("/webhooks/stripe", webhook.handle, methods=["POST"]),
        Route("/metrics", pages.metrics),
        Route("/health", pages.health),
        Route("/ready", pages.ready),
        Route("/api/detectors", api.detectors),
        Route("/api/anomalies", api.anomalies),
        Route("/api/events", api.events),
        Route("/api/import", importer.handle, methods=["POST"]),
        Route("/api/quarantine", quarantine.entries),
        Route("/api/quarantine/requeue", quarantine.requeue, methods=["POST"]),
        Route("/events", explorer.page),
        Route("/anomalies", anomaly_pages.index),
        Route("/anomalies/{anomaly}", anomaly_pages.detail),
        Route("/anomalies/{anomaly}/feedback", anomaly_pages.feedback, methods=["POST"]),
        Route(STYLESHEET, stylesheet),
        # Each route has its entry in http/openapi.py (tests/test_openapi.py checks).
        Route("/openapi.json", docs.openapi),
        Route("/docs", docs.page),
        Route("/docs/static/{name}", docs.asset),
    ]
    limits = Middleware(RequestLimits, max_header_bytes=settings.max_header_bytes,
                        max_in_flight=settings.max_connections)
    middleware = [limits, Middleware(HostAllowlist, hosts=allowed_hosts)]
    if settings.web_config and settings.web_config.users:
        middleware.append(Middleware(SignIn, verifier=Verifier(settings.web_config.users),
                                     api_token=settings.api_token))
    # Limits first: an oversize request is refused before anything else reads its headers.
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
