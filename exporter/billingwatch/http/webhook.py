"""POST /webhooks/stripe: verify, record atomically (recording/recorder.py), and only then answer 2xx."""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import stripe
from prometheus_client import Counter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from billingwatch.accounts import ACCOUNT_FIELD, DEFAULT_ACCOUNT
from billingwatch.config import Settings, is_placeholder
from billingwatch.detectors import Detector
from billingwatch.http.access import authorised
from billingwatch.jsonload import loads
from billingwatch.logsafe import safe
from billingwatch.notify.alertmanager import AlertSender
from billingwatch.recording.events import InvalidEvent
from billingwatch.recording.quarantine import envelope, quarantine
from billingwatch.recording.recorder import LivemodeRejected, Recorder
from billingwatch.store import Store, StoreUnavailable, Unrecordable
from billingwatch.store.contract import LayoutRefused
from billingwatch.store.group_commit import GroupCommit

log = logging.getLogger("billingwatch.webhook")

# Set by `billingwatch replay`/`backfill`: the event is history, not a webhook delivery. Only
# honoured with the proof /api/* asks for, else anyone re-posting a captured delivery with it
# could suppress that delivery's lag sample and last-received time.
REPLAY_HEADER = "BillingWatch-Replay"

# A real Stripe-Signature (t=..., one v1 per active secret, maybe a v0) is a few hundred bytes.
MAX_SIGNATURE_HEADER = 1024


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body within `timeout` seconds (TimeoutError otherwise): a trickled body cannot hold a slot."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared[:20]) > limit:
        raise TooLarge
    chunks, size = [], 0
    async with asyncio.timeout(timeout):
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge
            chunks.append(chunk)
    return b"".join(chunks)


def signature_timestamp(header: str) -> int | None:
    """The header's t= exactly as the SDK reads it (items split on ",", each on its first "=",
    keys compared as they are), or None when the header is not printable ASCII of sane length,
    names t more than once, has a blank in a key, or has no t of plain digits.

    One reading only: with `t =<now>,t=<future>` a lenient parser and the SDK's would read
    different timestamps, so the future one would pass the check below while the SDK verified it.
    """
    if len(header) > MAX_SIGNATURE_HEADER or not header.isascii() or not header.isprintable():
        return None
    items = [item.split("=", 2) for item in header.split(",")]
    if any(part != "".join(part.split()) for part, *_ in items):  # a blank in a key
        return None
    stamps = [rest[0] for key, *rest in items if key == "t" and rest]
    if len(stamps) != 1 or sum(key == "t" for key, *_ in items) != 1:
        return None
    value = stamps[0]
    # Plain digits only: the SDK's int() would also take "+1", "1_0" or blanks around them.
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 12 else None


def signing_secret(payload: str, header: str, secrets: Sequence[str], tolerance: int, now: float) -> str | None:
    """The secret (of several during a rotation) that signed the payload within the tolerance, else None.

    The SDK only rejects timestamps that are too old; one in the future is bounded here too. Any
    malformed header is a refusal, never an exception: the SDK raises TypeError on non-ASCII bytes.
    """
    timestamp = signature_timestamp(header)
    if timestamp is None or timestamp > now + tolerance:
        return None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=tolerance)
            return secret
        except (stripe.SignatureVerificationError, TypeError, ValueError):
            continue
    return None


def is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class WebhookEndpoint:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        detectors: list[Detector],
        requests: Counter,
        clock: Callable[[], float] = time.time,
        sender: AlertSender | None = None,
        detector_errors: Counter | None = None,
        other_secrets: Sequence[str] = (),
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self._account = account  # the configured account this endpoint records for
        self._settings = settings
        # The other accounts' secrets (BILLINGWATCH_ACCOUNTS_FILE): an event they sign is refused
        # and counted apart, so a webhook endpoint pointed at the wrong URL is told from forgery.
        self._other_secrets = tuple(other_secrets)
        self._sender = sender
        self._detector_errors = detector_errors
        self._recorder = Recorder(store, detectors, settings.dedup_ttl, settings.subscription_ttl, clock,
                                  max_clock_skew=settings.signature_tolerance, plans=settings.plans,
                                  # Redis: requests that arrive together share one round trip.
                                  group_commit=GroupCommit(store.apply_many) if store.kind == "redis" else None)
        self._requests = requests
        self._clock = clock

    @property
    def recorder(self) -> Recorder:
        """The one Recorder of this app (POST /api/quarantine/requeue records through it too)."""
        return self._recorder

    def _reject(self, result: str, status: int, reason: str) -> JSONResponse:
        self._requests.labels(result).inc()
        return JSONResponse({"error": reason}, status_code=status)

    async def _log_rejected(self, document: Any, reason: str, received_at: float, history: bool) -> None:
        """The recent-events log line of a signed event refused here. Best effort: the log is for
        people looking into an incident, so a store that cannot take it never changes the answer."""
        try:
            await self._recorder.log_rejected(document, reason, received_at=received_at, history=history)
        except Exception as exc:
            log.warning("could not log the rejected event %s: %s", safe(document.get("id") if isinstance(
                document, dict) else None), safe(type(exc).__name__))

    async def _quarantine(self, document: Any, payload: str, reason: str, received_at: float, history: bool,
                          live_allowed: bool) -> JSONResponse | None:
        """Keep a trusted event we cannot record (recording/quarantine.py) and answer 2xx; None when
        the body is no Stripe event envelope or a livemode one where only test mode is allowed
        (then it is refused as before)."""
        event = envelope(document)
        if event is None or (event.livemode and not live_allowed):
            return None
        record = quarantine(event, document, payload, reason, received_at=received_at, history=history,
                            dedup_ttl=self._settings.dedup_ttl,
                            detector_event_types=[d.event_types for d in self._recorder.detectors])
        try:
            duplicate = await self._recorder.store.quarantine(record)
        except StoreUnavailable as exc:
            return self._unavailable(event.id, exc)
        except Unrecordable as exc:
            log.error("event %s could not be quarantined: %s", safe(event.id), safe(exc))
            return None
        if duplicate:
            self._requests.labels("duplicate").inc()
            return JSONResponse({"received": True, "duplicate": True, "anomalies": 0})
        log.warning("event %s (%s) quarantined, not recorded: %s", safe(event.id), safe(event.type), safe(reason))
        self._requests.labels("quarantined").inc()
        return JSONResponse({"received": True, "quarantined": True, "reason": reason[:300]})

    def _unavailable(self, event_id: object, exc: StoreUnavailable) -> JSONResponse:
        log.warning("store unavailable, answering 503 so Stripe retries %s: %s", safe(event_id), safe(exc))
        # A newer store layout is no passing outage: say so (store/layout.py).
        detail = f"store unavailable: {exc}" if isinstance(exc, LayoutRefused) else "store unavailable; retry later"
        return self._reject("store_unavailable", 503, detail)

    async def handle(self, request: Request) -> JSONResponse:
        settings = self._settings
        if REPLAY_HEADER in request.headers and not authorised(request, settings.api_token):
            return self._reject(
                "replay_unauthorized", 403,
                f"{REPLAY_HEADER} needs BILLINGWATCH_API_TOKEN as a bearer token (or a direct loopback "
                "request when no token is set)",
            )
        if settings.insecure_skip_signature and not is_json(request.headers.get("content-type", "")):
            # A web page can POST text/plain cross-site without a preflight, never application/json.
            return self._reject("unsupported_media_type", 415, "Content-Type must be application/json")
        try:
            body = await read_body(request, settings.max_body_bytes, settings.read_timeout)
        except TooLarge:
            return self._reject("too_large", 413, f"body larger than {settings.max_body_bytes} bytes")
        except TimeoutError:
            response = self._reject("body_timeout", 408, f"body not received within {settings.read_timeout} s")
            response.headers["connection"] = "close"  # the rest of the body is not worth waiting for
            return response
        except ClientDisconnect:
            return self._reject("invalid_json", 400, "client disconnected before the body was read")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._reject("invalid_json", 400, "body is not UTF-8")

        live_allowed = not settings.insecure_skip_signature
        if not settings.insecure_skip_signature:
            header = request.headers.get("stripe-signature")
            if not header:
                return self._reject("missing_signature", 400, "Stripe-Signature header is missing")
            secret = signing_secret(payload, header, settings.webhook_secrets, settings.signature_tolerance,
                                    time.time())
            if secret is None and self._other_secrets and signing_secret(
                    payload, header, self._other_secrets, settings.signature_tolerance, time.time()) is not None:
                return self._reject("wrong_account", 400, "Stripe-Signature is another account's: "
                                    "post each account's events to its own /webhooks/stripe/<name>")
            if secret is None:
                return self._reject(
                    "invalid_signature", 400,
                    "Stripe-Signature is malformed, does not match any secret, or is too old or in the future",
                )
            live_allowed = not is_placeholder(secret) and not settings.test_only
        try:
            document = loads(payload)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            return self._reject("invalid_json", 400, "body is not JSON")
        event_id = document.get("id") if isinstance(document, dict) else None  # for the log only
        history = request.headers.get(REPLAY_HEADER) == "1"
        received_at = self._clock()
        try:
            outcome = await self._recorder.record(
                document, received_at=received_at, history=history, live_allowed=live_allowed,
            )
        except InvalidEvent as exc:
            kept = await self._quarantine(document, payload, str(exc), received_at, history, live_allowed)
            if kept is not None:
                return kept
            await self._log_rejected(document, str(exc), received_at, history)
            return self._reject("invalid_event", 400, str(exc))
        except LivemodeRejected:
            reason = ("livemode events are refused: this account is test_only in BILLINGWATCH_ACCOUNTS_FILE"
                      if settings.test_only else
                      "livemode events need signature verification with a real secret, not a placeholder")
            await self._log_rejected(document, reason, received_at, history)
            return self._reject("livemode_rejected", 400, reason)
        except StoreUnavailable as exc:
            return self._unavailable(event_id, exc)
        except Unrecordable as exc:
            # Not 503: a retry of this event meets the same refusal. Nothing was written: kept instead.
            kept = await self._quarantine(document, payload, f"event cannot be recorded: {exc}", received_at,
                                          history, live_allowed)
            if kept is not None:
                return kept
            log.error("event %s refused by the store, nothing recorded: %s", safe(event_id), safe(exc))
            await self._log_rejected(document, f"event cannot be recorded: {exc}", received_at, history)
            return self._reject("unrecordable", 422, f"event cannot be recorded: {exc}")
        self._requests.labels("duplicate" if outcome.duplicate else "accepted").inc()
        for name in outcome.failed_detectors:
            log.error("detector %s raised on event %s: recorded without its checks", safe(name), safe(event_id))
            if self._detector_errors is not None:
                self._detector_errors.labels(name).inc()
        for anomaly in outcome.anomalies:
            log.warning("%s %s (%s): %s", "history anomaly" if anomaly.get("history") else "anomaly",
                        safe(anomaly["detector"]), safe(anomaly["severity"]), safe(anomaly["summary"]))
        if outcome.anomalies and self._sender is not None:
            # Only the replica whose store call found the anomaly gets it, once; history ones are
            # skipped there. A queue put: the answer to Stripe never waits for Alertmanager.
            self._sender.submit([{**a, ACCOUNT_FIELD: self._account} for a in outcome.anomalies])
        return JSONResponse(
            {"received": True, "duplicate": outcome.duplicate, "anomalies": len(outcome.anomalies)}
        )
