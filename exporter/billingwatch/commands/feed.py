"""Delivering Stripe events: to a running exporter's POST /api/import in NDJSON chunks (replay,
backfill), as signed webhooks (simulate), or straight into the store (--direct).

replay, backfill and reconcile --replay all feed through here, so they agree on what accepted,
duplicate and rejected mean, retry the same way, and print the same summary.
"""

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
import stripe
from tqdm import tqdm

from billingwatch.commands.account_option import add_account_argument, chosen_account
from billingwatch.commands.collector import collector_paused
from billingwatch.config import ConfigError, from_env
from billingwatch.http.import_api import MAX_IMPORT_BYTES, NDJSON
from billingwatch.jsonload import loads
from billingwatch.recording.recorder import Recorder
from billingwatch.store import StoreUnavailable, open_store

DEFAULT_URL = "http://127.0.0.1:9786"
DEFAULT_CONCURRENCY = 2  # chunks in flight to /api/import: the next is read and sent while one is recorded
DEFAULT_CHUNK = 500  # events per POST /api/import
CHUNK_BYTES = MAX_IMPORT_BYTES // 2  # a chunk's body stays well inside the exporter's bound
DEFAULT_BATCH = 500  # events per pipelined round trip into Redis with --direct
# quarantined: signed, kept by the exporter unrecorded for `billingwatch requeue` (recording/quarantine.py)
Result = Literal["accepted", "duplicate", "rejected", "failed", "quarantined"]


@dataclass(frozen=True)
class Delivery:
    result: Result  # failed: still not delivered after the retries (the event was not recorded)
    reason: str = ""
    anomalies: int = 0


@dataclass(frozen=True)
class Unreadable:
    """An input line that is not JSON: rejected without being sent."""

    reason: str


Done = Callable[[str, Delivery], None]  # called once per event, in whatever order they finish


class Sink(Protocol):
    async def deliver_all(self, items: AsyncIterable[tuple[str, Any]], done: Done) -> None:
        """Deliver every (label, event document) pair, reporting each to `done`."""

    async def close(self) -> None: ...


REQUEST_TIMEOUT = 30.0  # seconds for one delivery and its answer


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt` (1-based): 0.5, 1, 2, 4, 8, capped at 8."""
    return float(min(0.5 * 2 ** (attempt - 1), 8.0))


async def finish(running: set["asyncio.Task[None]"]) -> None:
    """Wait for the deliveries in flight, also when the input failed (e.g. Stripe's API midway):
    what was read is recorded before the error is reported. Cancelled (Ctrl-C): cancel them too."""
    try:
        await asyncio.gather(*running)
    except asyncio.CancelledError:
        for task in running:
            task.cancel()
        raise


class WebhookSink:
    """POSTs each event to the exporter signed as Stripe signs it; retries 5xx and connection errors.
    `billingwatch simulate` sends live-looking traffic this way; replay and backfill use ImportSink.

    Up to `concurrency` events are in flight at once, so they may be recorded out of order: the
    detectors reason in event time, and each event is recorded once however it is interleaved.
    """

    def __init__(self, url: str, secret: str, retries: int, concurrency: int = 1) -> None:
        self.url = url
        self._secret = secret
        self._retries = retries
        self._concurrency = concurrency
        self._client: httpx.AsyncClient | None = None  # made in the running loop, on first use

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client(self._concurrency)
        return self._client

    async def deliver_all(self, items: AsyncIterable[tuple[str, Any]], done: Done) -> None:
        slots = asyncio.Semaphore(self._concurrency)
        running: set[asyncio.Task[None]] = set()

        async def one(label: str, document: Any) -> None:
            try:
                done(label, await self.deliver(document))
            finally:
                slots.release()

        try:
            async for label, document in items:
                await slots.acquire()
                task = asyncio.create_task(one(label, document))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            await finish(running)

    async def deliver(self, document: Any) -> Delivery:
        payload = json.dumps(document, separators=(",", ":"))
        reason = ""
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(backoff(attempt))
            # Signed again on each attempt, with a fresh timestamp, as Stripe does on its retries.
            header = stripe.WebhookSignature.generate_signature_header(payload, self._secret)
            try:
                response = await self._http().post(self.url, content=payload.encode(), headers={
                    "Stripe-Signature": header, "Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__} posting to {self.url}"
                continue
            status = response.status_code
            if status >= 500 or status == 429:
                reason = f"HTTP {status}"
                continue
            answer = json_object(response.content)
            if status != 200:
                error = answer.get("error", response.content[:200].decode(errors="replace"))
                return Delivery("rejected", f"HTTP {status}: {error}")
            if answer.get("quarantined") is True:
                return Delivery("quarantined", str(answer.get("reason", ""))[:300])
            return Delivery("duplicate" if answer.get("duplicate") else "accepted",
                            anomalies=int(answer.get("anomalies", 0)))
        return Delivery("failed", reason)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def new_client(connections: int) -> httpx.AsyncClient:
    """Keep-alive connections, one per request in flight."""
    return httpx.AsyncClient(limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
                             timeout=REQUEST_TIMEOUT)


def json_object(body: bytes) -> dict[str, Any]:
    """An answer's JSON object, or {} when it is none."""
    try:
        answer = loads(body)
    except (ValueError, RecursionError):
        return {}
    return answer if isinstance(answer, dict) else {}


class ImportSink:
    """Sends events to the exporter's POST /api/import as NDJSON chunks over keep-alive connections,
    `concurrency` chunks in flight; a chunk answered 5xx/429 or lost to a connection error is sent
    again whole (what it recorded comes back duplicate). History: state, no live counter."""

    def __init__(self, url: str, retries: int, api_token: str = "", concurrency: int = 1,
                 chunk: int = DEFAULT_CHUNK) -> None:
        self.url = url
        self._retries = retries
        self._concurrency = concurrency
        self._chunk = chunk
        self._headers = {"Content-Type": NDJSON}
        if api_token:  # without one the exporter serves /api/* to direct loopback requests only
            self._headers["Authorization"] = f"Bearer {api_token}"
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client(self._concurrency)
        return self._client

    async def deliver_all(self, items: AsyncIterable[tuple[str, Any]], done: Done) -> None:
        slots = asyncio.Semaphore(self._concurrency)
        running: set[asyncio.Task[None]] = set()

        async def send(chunk: list[tuple[str, bytes]]) -> None:
            try:
                for (label, _), delivery in zip(chunk, await self.deliver_lines([line for _, line in chunk]),
                                                strict=True):
                    done(label, delivery)
            finally:
                slots.release()

        async def start(chunk: list[tuple[str, bytes]]) -> None:
            await slots.acquire()
            task = asyncio.create_task(send(chunk))
            running.add(task)
            task.add_done_callback(running.discard)

        try:
            chunk: list[tuple[str, bytes]] = []
            size = 0
            async for label, document in items:
                try:
                    line = orjson.dumps(document)
                except (TypeError, orjson.JSONEncodeError):  # deeper than orjson writes (254 levels)
                    done(label, Delivery("rejected", "JSON nested too deeply"))
                    continue
                if len(line) + 1 > CHUNK_BYTES:
                    done(label, Delivery("rejected", f"event larger than {CHUNK_BYTES} bytes"))
                    continue
                if chunk and (len(chunk) >= self._chunk or size + len(line) + 1 > CHUNK_BYTES):
                    await start(chunk)
                    chunk, size = [], 0
                chunk.append((label, line))
                size += len(line) + 1
            if chunk:
                await start(chunk)
        finally:
            await finish(running)

    async def deliver_lines(self, lines: list[bytes]) -> list[Delivery]:
        """One delivery per line, in order: the answer's counts, each refused line with its reason."""
        body = b"\n".join(lines) + b"\n"
        reason = ""
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(backoff(attempt))
            try:
                response = await self._http().post(self.url, content=body, headers=self._headers)
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__} posting to {self.url}"
                continue
            status = response.status_code
            answer = json_object(response.content)
            if status >= 500 or status == 429:
                reason = f"HTTP {status}: {answer.get('error', '')}".rstrip(": ")
                continue
            if status != 200:
                error = answer.get("error", response.content[:200].decode(errors="replace"))
                return [Delivery("rejected", f"HTTP {status}: {error}")] * len(lines)
            return imported(answer, len(lines))
        return [Delivery("failed", reason)] * len(lines)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def imported(answer: dict[str, Any], count: int) -> list[Delivery]:
    """The deliveries of a chunk of `count` lines from /api/import's answer: refused lines by their
    numbers; the others accepted or duplicate as counted (which is which is not said per line), the
    chunk's anomalies on the first."""
    refused = {int(e["line"]): str(e["error"]) for e in answer.get("errors", [])
               if isinstance(e, dict) and isinstance(e.get("line"), int)}
    duplicates = int(answer.get("duplicate", 0))
    anomalies = int(answer.get("anomalies", 0))
    deliveries = []
    for number in range(1, count + 1):
        if number in refused:
            deliveries.append(Delivery("rejected", refused[number]))
        elif duplicates:
            duplicates -= 1
            deliveries.append(Delivery("duplicate"))
        else:
            deliveries.append(Delivery("accepted", anomalies=anomalies))
            anomalies = 0
    return deliveries


class StoreSink:
    """Records replayed history straight into the store through the webhook's own path, in batches
    of pipelined script calls (Recorder.record_many); retries the events an unreachable store left
    without an answer."""

    def __init__(self, recorder: Recorder, retries: int, batch: int = DEFAULT_BATCH) -> None:
        self.recorder = recorder
        self._retries = retries
        self._batch = batch

    async def deliver(self, document: Any) -> Delivery:
        return (await self.deliver_many([document]))[0]

    async def deliver_many(self, documents: list[Any]) -> list[Delivery]:
        deliveries = [Delivery("failed")] * len(documents)
        pending = list(range(len(documents)))
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(backoff(attempt))
            results = await self.recorder.record_many([documents[i] for i in pending], history=True)
            unanswered = []
            for i, result in zip(pending, results, strict=True):
                if isinstance(result, StoreUnavailable):
                    # Sent again: if it did run, it comes back a duplicate and counts nothing twice.
                    unanswered.append(i)
                    deliveries[i] = Delivery("failed", f"store unavailable ({result})")
                elif isinstance(result, Exception):  # InvalidEvent, Unrecordable: retrying cannot help
                    deliveries[i] = Delivery("rejected", str(result))
                else:
                    deliveries[i] = Delivery("duplicate" if result.duplicate else "accepted",
                                             anomalies=len(result.anomalies))
            pending = unanswered
            if not pending:
                break
        return deliveries

    async def deliver_all(self, items: AsyncIterable[tuple[str, Any]], done: Done) -> None:
        # Two batches at a time: the next one is read and planned here while Redis runs the last.
        slots = asyncio.Semaphore(2)
        running: set[asyncio.Task[None]] = set()

        async def flush(batch: list[tuple[str, Any]]) -> None:
            try:
                await self._flush(batch, done)
                collector.after_batch()
            finally:
                slots.release()

        async def start(batch: list[tuple[str, Any]]) -> None:
            await slots.acquire()
            task = asyncio.create_task(flush(batch))
            running.add(task)
            task.add_done_callback(running.discard)

        with collector_paused() as collector:
            try:
                batch: list[tuple[str, Any]] = []
                async for item in items:
                    batch.append(item)
                    if len(batch) >= self._batch:
                        await start(batch)
                        batch = []
                if batch:
                    await start(batch)
            finally:
                await finish(running)

    async def _flush(self, batch: list[tuple[str, Any]], done: Done) -> None:
        deliveries = await self.deliver_many([document for _, document in batch])
        for (label, _), delivery in zip(batch, deliveries, strict=True):
            done(label, delivery)
        batch.clear()

    async def close(self) -> None:
        await self.recorder.store.close()


def add_sink_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--url", default=DEFAULT_URL,
        help=f"the exporter's address (default {DEFAULT_URL}): events go to its POST /api/import in chunks, "
        "with BILLINGWATCH_API_TOKEN as the bearer token when it is set",
    )
    group.add_argument(
        "--direct", action="store_true",
        help="record straight into the store named by REDIS_URL instead of over HTTP",
    )
    parser.add_argument("--retries", type=int, default=5,
                        help="retries of one batch on 5xx or an unreachable store/exporter (default 5)")
    add_account_argument(parser)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"batches in flight at once over HTTP (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--progress", action="store_true",
                        help="show the progress bar on stderr even when it is not a terminal (e.g. in a log)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                        help=f"events per round trip to Redis with --direct, or per POST over HTTP "
                        f"(default {DEFAULT_BATCH})")


def webhook_url(url: str, account: str | None = None) -> str:
    """Accept the exporter's base address as well as its webhook endpoint; with `account`
    (BILLINGWATCH_ACCOUNTS_FILE), the base address means that account's endpoint."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--url must be an http(s) address, got {url!r}")
    endpoint = "/webhooks/stripe" + (f"/{account}" if account else "")
    return url.rstrip("/") + endpoint if parts.path in ("", "/") else url


def import_url(url: str, account: str | None = None) -> str:
    """POST /api/import of the exporter at `url`: its base address, or (as before /api/import) its
    webhook endpoint; with `account` (BILLINGWATCH_ACCOUNTS_FILE), that account's import."""
    base = webhook_url(url)
    endpoint = base.removesuffix("/webhooks/stripe") + "/api/import" if base.endswith("/webhooks/stripe") else base
    return endpoint + (f"?account={account}" if account else "")


def open_recorder(account: str | None = None) -> Recorder:
    """The direct path into the store REDIS_URL names, with the exporter's settings: the store of
    the account `account` names (--account; default: the account named default)."""
    settings = from_env()
    settings = settings.for_account(chosen_account(settings, account))
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
    if not 1 <= args.concurrency <= 256:
        raise ConfigError("--concurrency must be between 1 and 256")
    if not 1 <= args.batch_size <= 10_000:
        raise ConfigError("--batch-size must be between 1 and 10000")
    if args.direct:
        return StoreSink(open_recorder(args.account), args.retries, args.batch_size)
    settings = from_env()
    account = chosen_account(settings, args.account)
    path_account = account.name if settings.accounts_file else None  # without the file: the one account
    return ImportSink(import_url(args.url, path_account), args.retries, settings.api_token, args.concurrency,
                      args.batch_size)


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
        if self.counts["quarantined"]:  # kept by the exporter: `billingwatch requeue` records them later
            parts += f", {self.counts['quarantined']} quarantined"
        return f"{what}: {total} events: {parts}; {self.anomalies} anomalies found"


def progress(total: int | None, desc: str, show: bool = False) -> "tqdm[Any]":
    """A progress bar on stderr, shown when stderr is a terminal or when `show` (--progress) asks."""
    # Asked for (a log, not a terminal): the final state stays as the last line.
    return tqdm(total=total, desc=desc, unit="event", file=sys.stderr, disable=False if show else None, leave=show,
                mininterval=0.5)


def report(label: str, delivery: Delivery) -> None:
    if delivery.result in ("rejected", "failed", "quarantined"):
        tqdm.write(f"{label}: {delivery.result}: {delivery.reason}", file=sys.stderr)


async def feed(items: AsyncIterable[tuple[str, Any]], sink: Sink, desc: str, total: int | None = None,
               show_progress: bool = False) -> Tally:
    """Deliver (label, event document) pairs; a label names the event in error lines."""
    tally = Tally()
    with progress(total, desc, show_progress) as bar:
        def done(label: str, delivery: Delivery) -> None:
            tally.add(delivery)
            report(label, delivery)
            bar.update(1)

        async def readable() -> AsyncIterator[tuple[str, Any]]:
            async for label, document in items:
                if isinstance(document, Unreadable):
                    done(label, Delivery("rejected", document.reason))
                else:
                    yield label, document

        await sink.deliver_all(readable(), done)
    return tally
