"""POST /webhooks/stripe: verify, parse, plan, record atomically, and only then answer 2xx."""

import json
import logging
import time
from collections.abc import Callable, Sequence

import stripe
from prometheus_client import Counter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from billingwatch.config import Settings
from billingwatch.detectors import Detector
from billingwatch.events import InvalidEvent, parse_event
from billingwatch.recorder import Recorder
from billingwatch.store import Store, StoreUnavailable

log = logging.getLogger("billingwatch.webhook")

# Set by `billingwatch replay`/`backfill`: the event is history, not a webhook delivery.
REPLAY_HEADER = "BillingWatch-Replay"

RESULTS = (
    "accepted", "duplicate", "missing_signature", "invalid_signature", "too_large", "invalid_json",
    "invalid_event", "livemode_rejected", "store_unavailable",
)


def new_requests_counter() -> Counter:
    counter = Counter(
        "billingwatch_webhook_requests",
        "Webhook requests handled by this replica, by result.",
        ["result"],
        registry=None,
    )
    for result in RESULTS:
        counter.labels(result)
    return counter


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def signature_valid(payload: str, header: str, secrets: Sequence[str], tolerance: int) -> bool:
    """True when any of the secrets (rotation) signed the payload within the tolerance."""
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=tolerance)
            return True
        except stripe.SignatureVerificationError:
            continue
    return False


class WebhookEndpoint:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        detectors: list[Detector],
        requests: Counter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._recorder = Recorder(store, detectors, settings.dedup_ttl, settings.subscription_ttl, clock)
        self._requests = requests
        self._clock = clock

    def _reject(self, result: str, status: int, reason: str) -> JSONResponse:
        self._requests.labels(result).inc()
        return JSONResponse({"error": reason}, status_code=status)

    async def handle(self, request: Request) -> JSONResponse:
        settings = self._settings
        try:
            body = await read_body(request, settings.max_body_bytes)
        except TooLarge:
            return self._reject("too_large", 413, f"body larger than {settings.max_body_bytes} bytes")
        except ClientDisconnect:
            return self._reject("invalid_json", 400, "client disconnected before the body was read")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._reject("invalid_json", 400, "body is not UTF-8")

        if not settings.insecure_skip_signature:
            header = request.headers.get("stripe-signature")
            if not header:
                return self._reject("missing_signature", 400, "Stripe-Signature header is missing")
            if not signature_valid(payload, header, settings.webhook_secrets, settings.signature_tolerance):
                return self._reject(
                    "invalid_signature", 400, "Stripe-Signature does not match any secret, or is too old"
                )
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            return self._reject("invalid_json", 400, "body is not JSON")
        received_at = self._clock()
        try:
            event = parse_event(document)
            if settings.insecure_skip_signature and event.livemode:
                return self._reject("livemode_rejected", 400, "livemode events need signature verification")
            replayed = request.headers.get(REPLAY_HEADER) == "1"
            plan = self._recorder.plan(event, received_at, replayed=replayed)
        except InvalidEvent as exc:
            return self._reject("invalid_event", 400, str(exc))
        try:
            outcome = await self._store.apply(plan)
        except StoreUnavailable as exc:
            log.warning("store unavailable, answering 503 so Stripe retries %s: %s", event.id, exc)
            return self._reject("store_unavailable", 503, "store unavailable; retry later")
        self._requests.labels("duplicate" if outcome.duplicate else "accepted").inc()
        for anomaly in outcome.anomalies:
            log.warning("%s %s (%s): %s", "history anomaly" if anomaly.get("history") else "anomaly",
                        anomaly["detector"], anomaly["severity"], anomaly["summary"])
        return JSONResponse(
            {"received": True, "duplicate": outcome.duplicate, "anomalies": len(outcome.anomalies)}
        )
