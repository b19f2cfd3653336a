"""The home page: what a newcomer checks in ten seconds, and the next step when something is
missing. It tells whether the signing secret is a placeholder and names the last event, so it
has the access rule of the other people's pages (http/access.py)."""

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from billingwatch import __version__
from billingwatch.anomaly_ref import anomalies_path
from billingwatch.config import Settings, is_placeholder
from billingwatch.detectors import Detector
from billingwatch.http.access import authorised
from billingwatch.http.views import age, problem, render
from billingwatch.notify.alertmanager import AlertSender, redacted
from billingwatch.store import Store, StoreUnavailable

DAY = 86400
PUBLIC = ("This status page names customers' events: send BILLINGWATCH_API_TOKEN as 'Authorization: Bearer <token>', "
          "or, without a token, open it from this machine. /health, /ready, /metrics and /docs need no sign-in.")


@dataclass(frozen=True)
class Line:
    """One row of the status list: what, how it stands (ok, warn or error) and the text."""

    what: str
    level: str
    text: str
    link: str = ""


def secret_line(settings: Settings) -> Line:
    if settings.insecure_skip_signature:
        return Line("Signing secret", "warn", "signature checks are OFF (development mode): test events only")
    if settings.accounts_file:
        names = ", ".join(a.name + (" (test only)" if a.test_only else "") for a in settings.accounts_file)
        return Line("Signing secrets", "ok", f"{len(settings.accounts_file)} accounts (BILLINGWATCH_ACCOUNTS_FILE): "
                    f"{names}, each on /webhooks/stripe/<name>")
    if any(is_placeholder(s) for s in settings.webhook_secrets):
        return Line("Signing secret", "warn", "a placeholder, not a Stripe signing secret: test mode only, "
                    "livemode events are refused")
    count = len(settings.webhook_secrets)
    return Line("Signing secret", "ok", f"a Stripe signing secret{'' if count == 1 else f' ({count}, rotating)'}")


def mode_line(events: list[dict[str, Any]]) -> Line:
    """Test or live: what the recorded events of the log say (a signing secret does not tell)."""
    recorded = [e for e in events if e.get("result") != "rejected"]
    live = sum(1 for e in recorded if e.get("livemode") is True)
    if not recorded:
        return Line("Mode", "warn", "no event recorded yet")
    if not live:
        return Line("Mode", "ok", f"test mode: {len(recorded)} test event(s) in the log, no live one")
    return Line("Mode", "ok", f"live: {live} live and {len(recorded) - live} test event(s) in the log")


class Home:
    def __init__(self, settings: Settings, store: Store, detectors: list[Detector], sender: AlertSender,
                 last_scrape: Callable[[], float | None], clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._store = store
        self._detectors = [d.name for d in detectors]
        self._sender = sender
        self._last_scrape = last_scrape
        self._clock = clock

    async def page(self, request: Request) -> Response:
        settings = self._settings
        if not authorised(request, settings.api_token):
            return problem("BillingWatch", PUBLIC, 401, {"WWW-Authenticate": "Bearer"})
        now = self._clock()
        lines = [secret_line(settings)]
        steps: list[str] = []
        ready = await self._store.can_record()
        store_text = "Redis" if self._store.kind == "redis" else "in process (not shared, not durable: set REDIS_URL)"
        lines.append(Line("Store", "ok" if ready is None else "error",
                          f"{store_text}: {'ready' if ready is None else 'cannot record: ' + ready}"))
        try:
            events = await self._store.events(settings.event_log_size)
            anomalies = await self._store.anomalies(settings.anomaly_log_size)
        except StoreUnavailable:
            events, anomalies = [], []
            steps.append("The store does not answer: check REDIS_URL and /ready.")
        webhook = (settings.external_url or str(request.base_url)).rstrip("/") + "/webhooks/stripe" + (
            f"/{settings.accounts_file[0].name}" if settings.accounts_file else "")
        if events:
            last = events[0]
            received = last["received"] if isinstance(last.get("received"), int) else now
            lines.append(Line("Last event", "ok" if last.get("result") != "rejected" else "warn",
                              f"{last.get('type')} {last.get('id')}, {age(now - received)} ago "
                              f"({last.get('result')}{', livemode' if last.get('livemode') else ', test mode'})",
                              "/events"))
        else:
            lines.append(Line("Last event", "warn", "no event yet"))
            steps.append(f"No event yet: run `stripe listen --forward-to {webhook}` (and `stripe trigger "
                         "charge.succeeded`), or `billingwatch simulate --url "
                         f"{webhook} --inject duplicate_charge` "
                         "for made-up test traffic.")
        lines.append(mode_line(events))
        recent = [e for e in events if isinstance(e.get("received"), int) and e["received"] >= now - DAY]
        by_type = Counter(str(e.get("type")) for e in recent if e.get("result") == "accepted")
        rejected = sum(1 for e in recent if e.get("result") == "rejected")
        if rejected:
            steps.append(f"{rejected} event(s) refused in the last 24 h: their reasons are on /events.")
        scraped = self._last_scrape()
        if scraped is None:
            lines.append(Line("Prometheus", "warn", "no scrape of /metrics seen by this process yet"))
            steps.append("Prometheus has not scraped this exporter: add it as a scrape target (docs/deployment.md).")
        else:
            lines.append(Line("Prometheus", "ok" if now - scraped < 300 else "warn",
                              f"last scrape of /metrics {age(now - scraped)} ago (this process)"))
        lines.append(self._alertmanager_line(now))
        if not self._sender.enabled:
            steps.append("No Alertmanager push: set BILLINGWATCH_ALERTMANAGER_URLS to have anomalies pushed as they "
                         "happen (the rules still alert through Prometheus).")
        counts = Counter(str(r.get("detector")) for r in anomalies
                         if isinstance(r.get("event_created"), int) and r["event_created"] >= now - DAY)
        return render("home.html", {
            "version": __version__, "lines": lines, "steps": steps, "by_type": sorted(by_type.items()),
            "received_24h": sum(by_type.values()),
            "anomalies": [{"detector": d, "count": counts.get(d, 0),
                           "link": anomalies_path(detector=d, range="24h")} for d in self._detectors],
            "anomalies_24h": sum(counts.values()), "all_24h": anomalies_path(range="24h"),
        })

    def _alertmanager_line(self, now: float) -> Line:
        sender = self._sender
        if not sender.enabled:
            return Line("Alertmanager push", "warn", "off (BILLINGWATCH_ALERTMANAGER_URLS not set)")
        where = ", ".join(redacted(u) for u in sender.settings.urls)
        last: Any = sender.last_result
        if last is None:
            return Line("Alertmanager push", "ok", f"to {where}; nothing pushed yet")
        at, result = last
        return Line("Alertmanager push", "ok" if result == "sent" else "error",
                    f"to {where}; last push {age(now - at)} ago: {result}")
