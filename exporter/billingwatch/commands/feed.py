"""Delivering Stripe events, as signed webhooks to a running exporter or straight into the store.

replay, backfill and reconcile --replay all feed through here, so they agree on what accepted,
duplicate and rejected mean, retry the same way, and print the same summary.
"""

import argparse
import asyncio
import json
import logging
import sys
from collections import Counter
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx
import stripe
from tqdm import tqdm

from billingwatch.config import ConfigError, from_env
from billingwatch.http.webhook import REPLAY_HEADER
from billingwatch.recording.events import InvalidEvent
from billingwatch.recording.recorder import Recorder
from billingwatch.store import StoreUnavailable, Unrecordable, open_store

DEFAULT_URL = "http://127.0.0.1:9786/webhooks/stripe"
# httpx logs every request at INFO; thousands of those lines would bury the summary.
logging.getLogger("httpx").setLevel(logging.WARNING)
Result = Literal["accepted", "duplicate", "rejected", "failed"]


@dataclass(frozen=True)
class Delivery:
    result: Result  # failed: still not delivered after the retries (the event was not recorded)
    reason: str = ""
    anomalies: int = 0


@dataclass(frozen=True)
class Unreadable:
    """An input line that is not JSON: rejected without being sent."""

    reason: str


class Sink(Protocol):
    async def deliver(self, document: Any) -> Delivery: ...

    async def close(self) -> None: ...


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt` (1-based): 0.5, 1, 2, 4, 8, capped at 8."""
    return float(min(0.5 * 2 ** (attempt - 1), 8.0))


class WebhookSink:
    """POSTs each event to the exporter signed as Stripe signs it; retries 5xx and connection errors."""

    def __init__(self, url: str, secret: str, retries: int, replayed: bool = False, api_token: str = "") -> None:
        self.url = url
        self._secret = secret
        self._retries = retries
        # Replayed history must not count as webhook delivery (lag, last received): say so.
        self._headers = {"Content-Type": "application/json"}
        if replayed:
            self._headers[REPLAY_HEADER] = "1"
        if api_token:  # the exporter honours the replay header only with it (or from loopback)
            self._headers["Authorization"] = f"Bearer {api_token}"
        self._client = httpx.AsyncClient(timeout=30)

    async def deliver(self, document: Any) -> Delivery:
        payload = json.dumps(document, separators=(",", ":"))
        reason = ""
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(backoff(attempt))
            # Signed again on each attempt, with a fresh timestamp, as Stripe does on its retries.
            header = stripe.WebhookSignature.generate_signature_header(payload, self._secret)
            try:
                response = await self._client.post(
                    self.url, content=payload.encode(),
                    headers={"Stripe-Signature": header, **self._headers},
                )
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__} posting to {self.url}"
                continue
            if response.status_code >= 500 or response.status_code == 429:
                reason = f"HTTP {response.status_code}"
                continue
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            if response.status_code != 200:
                return Delivery("rejected", f"HTTP {response.status_code}: {answer.get('error', response.text[:200])}")
            return Delivery("duplicate" if answer.get("duplicate") else "accepted",
                            anomalies=int(answer.get("anomalies", 0)))
        return Delivery("failed", reason)

    async def close(self) -> None:
        await self._client.aclose()


class StoreSink:
    """Records replayed history straight into the store through the webhook's own path; retries an
    unreachable store."""

    def __init__(self, recorder: Recorder, retries: int) -> None:
        self.recorder = recorder
        self._retries = retries

    async def deliver(self, document: Any) -> Delivery:
        reason = ""
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(backoff(attempt))
            try:
                outcome = await self.recorder.record(document, history=True)
            except (InvalidEvent, Unrecordable) as exc:  # retrying cannot help either
                return Delivery("rejected", str(exc))
            except StoreUnavailable as exc:
                reason = f"store unavailable ({exc})"
                continue
            return Delivery("duplicate" if outcome.duplicate else "accepted", anomalies=len(outcome.anomalies))
        return Delivery("failed", reason)

    async def close(self) -> None:
        await self.recorder.store.close()


def add_sink_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--url", default=DEFAULT_URL,
        help=f"the exporter's webhook endpoint (default {DEFAULT_URL}); events are signed with "
        "STRIPE_WEBHOOK_SECRET",
    )
    group.add_argument(
        "--direct", action="store_true",
        help="record straight into the store named by REDIS_URL instead of over HTTP",
    )
    parser.add_argument("--retries", type=int, default=5,
                        help="retries of one event on 5xx or an unreachable store/exporter (default 5)")


def webhook_url(url: str) -> str:
    """Accept the exporter's base address as well as its webhook endpoint."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--url must be an http(s) address, got {url!r}")
    return url.rstrip("/") + "/webhooks/stripe" if parts.path in ("", "/") else url


def open_recorder() -> Recorder:
    """The direct path into the store REDIS_URL names, with the exporter's settings."""
    settings = from_env()
    if not settings.redis_url:
        raise ConfigError(
            "REDIS_URL is not set: the exporter's in-process store cannot be reached from another "
            "process; use --url, or run the exporter with REDIS_URL and set it here too"
        )
    store = open_store(settings.redis_url, settings.redis_prefix, settings.anomaly_log_size,
                       settings.redis_wait_replicas, settings.redis_wait_timeout_ms,
                       event_log_size=settings.event_log_size)
    return Recorder.from_settings(settings, store)


def open_sink(args: argparse.Namespace) -> Sink:
    if args.retries < 0 or args.retries > 20:
        raise ConfigError("--retries must be between 0 and 20")
    if args.direct:
        return StoreSink(open_recorder(), args.retries)
    settings = from_env()
    if not settings.webhook_secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRET is not set: give the exporter's signing secret (whsec_...)")
    return WebhookSink(webhook_url(args.url), settings.webhook_secrets[0], args.retries, replayed=True,
                       api_token=settings.api_token)


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    anomalies: int = 0

    def add(self, delivery: Delivery) -> None:
        self.counts[delivery.result] += 1
        self.anomalies += delivery.anomalies

    @property
    def ok(self) -> bool:
        return not (self.counts["rejected"] or self.counts["failed"])

    def summary(self, what: str) -> str:
        total = sum(self.counts.values())
        parts = ", ".join(f"{self.counts[r]} {r}" for r in ("accepted", "duplicate", "rejected", "failed"))
        return f"{what}: {total} events: {parts}; {self.anomalies} anomalies found"


def progress(total: int | None, desc: str) -> "tqdm[Any]":
    """A progress bar on stderr, shown only when stderr is a terminal."""
    return tqdm(total=total, desc=desc, unit="event", file=sys.stderr, disable=None, leave=False)


def report(label: str, delivery: Delivery) -> None:
    if delivery.result in ("rejected", "failed"):
        tqdm.write(f"{label}: {delivery.result}: {delivery.reason}", file=sys.stderr)


async def feed(items: AsyncIterable[tuple[str, Any]], sink: Sink, desc: str, total: int | None = None) -> Tally:
    """Deliver (label, event document) pairs in order; a label names the event in error lines."""
    tally = Tally()
    with progress(total, desc) as bar:
        async for label, document in items:
            if isinstance(document, Unreadable):
                delivery = Delivery("rejected", document.reason)
            else:
                delivery = await sink.deliver(document)
            tally.add(delivery)
            report(label, delivery)
            bar.update(1)
    return tally
