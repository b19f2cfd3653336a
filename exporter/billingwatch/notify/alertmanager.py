"""Live anomalies pushed to Alertmanager's API (POST /api/v2/alerts) as soon as they are recorded.

`alert()` is the pure mapping: one anomaly record (as the store returns it) → one Alertmanager
alert with bounded routing labels, the finding's event id as its identity, and the facts as
annotations. `AlertSender` posts them off the request path: a bounded queue, one background
task, retries with exponential backoff, and a counter of what became of each notification.
The rule-based BillingAnomalyDetected stays the safety net: alertmanager.yml inhibits it while
the pushed alert of the same detector and livemode is firing.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter

from billingwatch.accounts import ACCOUNT_FIELD, DEFAULT_ACCOUNT
from billingwatch.anomaly_ref import anomaly_path
from billingwatch.config import Settings
from billingwatch.levels import alert_labels, priority
from billingwatch.logsafe import safe
from billingwatch.metrics.families import new_alert_notifications_counter
from billingwatch.money import amount_text

log = logging.getLogger("billingwatch.notify")

ALERTNAME = "BillingAnomaly"
RUNBOOK = "BillingAnomalyDetected.md"  # the rule's runbook covers every detector's findings
QUEUE_SIZE = 1000  # alerts waiting; more are dropped (and counted) rather than held in memory
BATCH = 64  # alerts per POST: Alertmanager takes a list
# After the first alert, wait this long for others to share its POST: a burst of anomalies costs
# a few requests, not one each, and a lone alert is late by 50 ms against a 2 s budget.
LINGER = 0.05
MAX_ATTEMPTS = 8  # per batch and Alertmanager: 0.5 + 1 + 2 + ... + 30 s, about a minute in all
FIRST_DELAY, MAX_DELAY = 0.5, 30.0
TIMEOUT = 5.0  # seconds per POST


@dataclass(frozen=True)
class PushSettings:
    urls: tuple[str, ...]  # Alertmanager base URLs (an HA pair: each gets every alert)
    external_url: str  # the exporter as a person's browser reaches it, for the links
    runbook_url: str  # the rules' runbook base
    resolve_after: int  # seconds until the alert resolves by itself (endsAt)


def push_settings(settings: Settings) -> PushSettings:
    """From the exporter's settings; empty external and runbook URLs take their defaults."""
    from billingwatch.rules.config import Settings as RulesSettings  # here: rules imports config

    return PushSettings(
        urls=settings.alertmanager_urls,
        external_url=settings.external_url or f"http://localhost:{settings.port}",
        runbook_url=settings.runbook_url or RulesSettings().runbook_url,
        resolve_after=settings.alert_resolve_seconds,
    )


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def details_url(external_url: str, record: dict[str, Any]) -> str:
    """The finding's own page (/anomalies/<id>): who, how much, its events, the Stripe
    Dashboard links and the verdict buttons."""
    return external_url.rstrip("/") + anomaly_path(record)


def objects_text(record: dict[str, Any]) -> str:
    """The Stripe objects involved, e.g. "charge ch_2 (related: ch_1); invoice in_1"."""
    parts = [f"{kind} {record[kind]}" for kind in ("charge", "invoice", "subscription") if record.get(kind)]
    related = [str(r) for r in record.get("related") or []]
    if related:
        parts.append("related: " + ", ".join(related))
    return "; ".join(parts)


def alert(record: dict[str, Any], settings: PushSettings, now: float) -> dict[str, Any]:
    """The Alertmanager alert for one live anomaly record (never called for history)."""
    detector = str(record["detector"])
    livemode = "true" if record.get("livemode") else "false"
    link = details_url(settings.external_url, record)
    facts: dict[str, str] = {}
    if record.get("customer"):
        facts["customer"] = str(record["customer"])
    if record.get("account"):  # Stripe Connect: whose customer, charge or invoice this is
        facts["account"] = str(record["account"])
    objects = objects_text(record)
    if objects:
        facts["objects"] = objects
    if isinstance(record.get("amount"), int):
        facts["amount"] = amount_text(record["amount"], record.get("currency"))
    if isinstance(record.get("event_created"), int):
        facts["event_time"] = iso(record["event_created"])
    who = ", ".join(facts[k] if k == "amount" else f"customer {facts[k]}" for k in ("customer", "amount") if k in facts)
    summary = f"{record.get('summary', detector + ' anomaly')}" + (f" ({who})" if who else "")
    annotations = {
        "summary": summary,
        "description": f"{detector}: {summary}. Event {record.get('event_id')} ({record.get('event_type')})"
                       + (f" of connected account {facts['account']}" if "account" in facts else "")
                       + f", livemode={livemode}.",
        **facts,
        "event_id": str(record.get("event_id", "")),
        "event_type": str(record.get("event_type", "")),
        "detected_at": iso(now),
        "runbook_url": f"{settings.runbook_url.rstrip('/')}/{RUNBOOK}",
        "details_url": link,
    }
    return {
        # Bounded routing labels, plus the event id so that two findings are two alerts (an
        # Alertmanager label, not a Prometheus series: it costs no cardinality anywhere).
        "labels": {
            "alertname": ALERTNAME,
            "detector": detector,
            **alert_labels(priority(str(record["severity"]))),
            "livemode": livemode,
            # The configured Stripe account (BILLINGWATCH_ACCOUNTS_FILE), as the rules' alerts carry it.
            "account": str(record.get(ACCOUNT_FIELD) or DEFAULT_ACCOUNT),
            "event_id": str(record.get("event_id", "")),
        },
        "annotations": annotations,
        "startsAt": iso(now),
        "endsAt": iso(now + settings.resolve_after),
        "generatorURL": link,
    }


def redacted(url: str) -> str:
    """A URL for the log: scheme, host and port only (user info may hold a password)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class AlertSender:
    """Posts pushed alerts in the background; `submit` never waits and never raises.

    One queue and one task per Alertmanager (as Prometheus does), so an HA peer that is down
    delays and drops nothing bound for the other. The counter counts each alert once per
    Alertmanager: sent, failed (given up after the retries) or dropped (its queue was full).
    """

    def __init__(self, settings: PushSettings, counter: Counter | None = None) -> None:
        self.settings = settings
        self.counter = counter if counter is not None else new_alert_notifications_counter()
        # Made in start(), inside the event loop that serves the app; until then submit() is a no-op.
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        # The last POST's outcome (the home page says): when, and "sent" or why it failed.
        self.last_result: tuple[float, str] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.urls)

    def submit(self, records: Sequence[dict[str, Any]]) -> None:
        """Queue an alert for each live anomaly record; history records are never pushed."""
        live = [r for r in records if not r.get("history")]
        if not self._queues or not live:
            return
        now = time.time()
        for record in live:
            pushed = alert(record, self.settings, now)
            for url, queue in self._queues.items():
                try:
                    queue.put_nowait(pushed)
                except asyncio.QueueFull:
                    self.counter.labels("dropped").inc()
                    log.warning("alert queue for %s full: %s anomaly of event %s not pushed there "
                                "(the rule's alert still fires)", redacted(url), safe(record.get("detector")),
                                safe(record.get("event_id")))

    async def start(self) -> None:
        if self.enabled and not self._tasks:
            self._queues = {url: asyncio.Queue(QUEUE_SIZE) for url in self.settings.urls}
            self._client = httpx.AsyncClient(timeout=TIMEOUT)
            self._tasks = [asyncio.create_task(self._run(url, queue), name="billingwatch-alert-sender")
                           for url, queue in self._queues.items()]

    async def stop(self, grace: float = 2.0) -> None:
        """Send what is queued for up to `grace` seconds, then stop (what remains counts as dropped)."""
        if not self._tasks:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues.values())), grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queue in self._queues.values():
            while not queue.empty():
                queue.get_nowait()
                self.counter.labels("dropped").inc()
        if self._client is not None:
            await self._client.aclose()
        self._tasks, self._queues, self._client = [], {}, None

    async def _run(self, url: str, queue: "asyncio.Queue[dict[str, Any]]") -> None:
        while True:
            batch = [await queue.get()]
            await asyncio.sleep(LINGER)
            while len(batch) < BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._post(url, batch)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _post(self, url: str, batch: list[dict[str, Any]]) -> None:
        """POST the batch to one Alertmanager, retrying with backoff; count the result per alert."""
        assert self._client is not None
        endpoint = url.rstrip("/") + "/api/v2/alerts"
        delay, reason = FIRST_DELAY, ""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = await self._client.post(endpoint, json=batch)
                if response.is_success:
                    self.counter.labels("sent").inc(len(batch))
                    self.last_result = (time.time(), "sent")
                    return
                reason = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    break  # Alertmanager refused the alerts themselves: the same body fails again
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            if attempt < MAX_ATTEMPTS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
        self.counter.labels("failed").inc(len(batch))
        self.last_result = (time.time(), f"failed ({reason})")
        log.warning("could not push %d alert(s) to Alertmanager %s: %s (the rule's alert still fires)",
                    len(batch), redacted(url), reason)
