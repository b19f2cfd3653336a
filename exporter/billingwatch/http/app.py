"""The Starlette application: the route table, its middleware and lifespan."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from billingwatch.accounts import DEFAULT_ACCOUNT
from billingwatch.config import Settings, is_placeholder
from billingwatch.detectors import Detector, build_detectors
from billingwatch.http.access import HostAllowlist, default_hosts
from billingwatch.http.account_view import AccountSelection, AccountsView, per_account
from billingwatch.http.anomaly_pages import AnomalyPages
from billingwatch.http.api import Api
from billingwatch.http.apidocs import ApiDocs
from billingwatch.http.explorer import Explorer
from billingwatch.http.home import Home
from billingwatch.http.import_api import ImportApi
from billingwatch.http.limits import RequestLimits
from billingwatch.http.pages import AccountMetrics, Pages
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


def open_account_store(settings: Settings) -> Store:
    """One account's store (settings.for_account): its own prefix, the shared Redis."""
    return open_store(settings.redis_url, settings.redis_prefix, settings.anomaly_log_size,
                      settings.redis_wait_replicas, settings.redis_wait_timeout_ms,
                      event_log_size=settings.event_log_size, quarantine_size=settings.quarantine_size,
                      allow_eviction=settings.redis_allow_eviction)


def create_app(settings: Settings, store: Store | None = None, clock: Callable[[], float] = time.time,
               stores: Mapping[str, Store] | None = None) -> Starlette:
    """Build the app. Tests pass their own store (one account) or stores (by account name) and
    clock; `serve` lets it open each account's store (BILLINGWATCH_ACCOUNTS_FILE, accounts.py)."""
    accounts = settings.accounts
    if stores is None:
        if store is not None and len(accounts) > 1:  # pragma: no cover - a programming error
            raise ValueError("several accounts need `stores`, one per account")
        stores = {a.name: store or open_account_store(settings.for_account(a)) for a in accounts}
    detectors: list[Detector] = build_detectors(settings.detector_env)
    sender = AlertSender(push_settings(settings))
    webhooks: dict[str, WebhookEndpoint] = {}
    imports: dict[str, Counter] = {}
    measured: list[AccountMetrics] = []
    for account in accounts:
        requests = new_requests_counter()
        detector_errors = new_detector_errors_counter(d.name for d in detectors)
        others = [secret for other in accounts if other is not account for secret in other.webhook_secrets]
        webhooks[account.name] = WebhookEndpoint(settings.for_account(account), stores[account.name], detectors,
                                                 requests, clock, sender, detector_errors, others, account.name)
        imports[account.name] = new_import_requests_counter()
        measured.append(AccountMetrics(account.name, stores[account.name], requests, detector_errors,
                                       imports[account.name]))
    # The pages and /api/* read every account's store (http/account_view.py); with no ?account=,
    # what only one account can answer (the quarantine) is the default account's, else the first's.
    primary = DEFAULT_ACCOUNT if DEFAULT_ACCOUNT in webhooks else accounts[0].name
    view = AccountsView(stores, primary, settings.anomaly_log_size, settings.event_log_size)
    pages = Pages(settings, measured, detectors, clock, sender.counter)
    api = Api(settings, view, detectors)
    quarantines = {a.name: QuarantineApi(settings, webhooks[a.name].recorder) for a in accounts}
    importers = {a.name: ImportApi(settings.for_account(a), webhooks[a.name].recorder, imports[a.name])
                 for a in accounts}
    explorer = Explorer(settings, view)
    anomaly_pages = AnomalyPages(settings, view, detectors, clock)
    home = Home(settings, view, detectors, sender, lambda: pages.last_scrape, clock)
    docs = ApiDocs([d.name for d in detectors])
    allowed_hosts = settings.allowed_hosts or default_hosts(settings.host)

    async def account_webhook(request: Request) -> Response:
        webhook = webhooks.get(request.path_params["account"])
        if webhook is None:
            return JSONResponse({"error": "no such account in BILLINGWATCH_ACCOUNTS_FILE"}, status_code=404)
        return await webhook.handle(request)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if view.kind == "memory":
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
        if settings.accounts_file:
            log.info("accounts (BILLINGWATCH_ACCOUNTS_FILE): %s, each on /webhooks/stripe/<name>%s",
                     ", ".join(a.name + (" (test only)" if a.test_only else "") for a in accounts),
                     "; /webhooks/stripe is the default account's" if DEFAULT_ACCOUNT in webhooks else "")
        if sender.enabled:
            log.info("pushing live anomalies to Alertmanager at %s",
                     ", ".join(redacted(url) for url in settings.alertmanager_urls))
        await sender.start()
        # store/layout_upkeep.py, each account's store
        upkeeps = [asyncio.create_task(layout_upkeep.in_background(s)) for s in stores.values()]
        yield {}
        for upkeep in upkeeps:
            upkeep.cancel()
        await sender.stop()
        for opened in stores.values():
            await opened.close()

    routes = [
        Route("/", home.page),
        *([Route("/webhooks/stripe", webhooks[DEFAULT_ACCOUNT].handle, methods=["POST"])]
          if DEFAULT_ACCOUNT in webhooks else []),
        Route("/webhooks/stripe/{account}", account_webhook, methods=["POST"]),
        Route("/metrics", pages.metrics),
        Route("/health", pages.health),
        Route("/ready", pages.ready),
        Route("/api/detectors", api.detectors),
        Route("/api/anomalies", api.anomalies),
        Route("/api/events", api.events),
        Route("/api/import", per_account({n: i.handle for n, i in importers.items()}, primary), methods=["POST"]),
        Route("/api/quarantine", per_account({n: q.entries for n, q in quarantines.items()}, primary)),
        Route("/api/quarantine/requeue", per_account({n: q.requeue for n, q in quarantines.items()}, primary),
              methods=["POST"]),
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
    # Innermost: only a signed-in request learns the account names from an unknown ?account=.
    middleware.append(Middleware(AccountSelection, names=[a.name for a in accounts]))
    # Limits first: an oversize request is refused before anything else reads its headers.
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
