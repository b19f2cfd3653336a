"""POST /api/import: Stripe events as NDJSON (one per line), recorded as history through the same
path as `replay --direct` (Recorder.record_many → Store.apply_many), in store batches.

Authorised like the other /api routes. Each line is its own case: a line that is not JSON or not
a recordable event is listed with its line number and reason and changes nothing, and the others
are still recorded. 200 only when every accepted line is durably recorded; if the store fails
for any line the answer is 503 and the client sends the whole chunk again (the lines recorded
before the failure come back duplicates). Unlike a webhook, an imported line is not quarantined:
it carries no Stripe signature, only the operator's word, so a bad one is refused and reported.
"""

import logging
from typing import Any

from prometheus_client import Counter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from billingwatch.config import Settings, is_placeholder
from billingwatch.http.access import authorised
from billingwatch.http.api import refused
from billingwatch.http.webhook import TooLarge, read_body
from billingwatch.jsonload import loads
from billingwatch.logsafe import safe
from billingwatch.recording.events import InvalidEvent
from billingwatch.recording.recorder import LivemodeRejected, Recorder
from billingwatch.store import Outcome, StoreUnavailable, Unrecordable
from billingwatch.store.contract import LayoutRefused

log = logging.getLogger("billingwatch.import")

NDJSON = "application/x-ndjson"
# One request's body: about 1,000 to 2,000 typical Stripe events; `billingwatch replay` sends chunks
# well below it. Bounded so one request holds neither much memory nor the store for long.
MAX_IMPORT_BYTES = 4 * 1024 * 1024
STORE_BATCH = 500  # events per Store.apply_many call (one round trip to Redis)
MAX_LISTED = 1000  # invalid lines listed in a reply (all are counted)


def _parse(line: bytes) -> Any:
    """The line's JSON document, or InvalidEvent saying why it is none."""
    try:
        return loads(line)
    except RecursionError:  # nesting deeper than the parser's stack
        raise InvalidEvent("JSON nested too deeply") from None
    except ValueError:  # UnicodeDecodeError included
        raise InvalidEvent("not JSON") from None


class ImportApi:
    def __init__(self, settings: Settings, recorder: Recorder, requests: Counter) -> None:
        self._settings = settings
        self._recorder = recorder
        self._requests = requests
        # As over the webhook: livemode events only where a real signing secret is configured.
        self._live_allowed = not settings.insecure_skip_signature and any(
            not is_placeholder(secret) for secret in settings.webhook_secrets)

    def _refuse(self, result: str, status: int, reason: str) -> JSONResponse:
        self._requests.labels(result).inc()
        return JSONResponse({"error": reason}, status_code=status)

    async def handle(self, request: Request) -> Response:
        settings = self._settings
        if not authorised(request, settings.api_token):
            self._requests.labels("unauthorized").inc()
            return refused()
        # A web page can POST text/plain cross-site without a preflight, never application/x-ndjson.
        if request.headers.get("content-type", "").split(";", 1)[0].strip().lower() != NDJSON:
            return self._refuse("unsupported_media_type", 415, f"Content-Type must be {NDJSON}")
        try:
            body = await read_body(request, MAX_IMPORT_BYTES, settings.read_timeout)
        except TooLarge:
            return self._refuse("too_large", 413, f"body larger than {MAX_IMPORT_BYTES} bytes: send fewer lines")
        except TimeoutError:
            response = self._refuse("body_timeout", 408, f"body not received within {settings.read_timeout} s")
            response.headers["connection"] = "close"
            return response
        except ClientDisconnect:
            return self._refuse("disconnected", 400, "client disconnected before the body was read")

        numbers: list[int] = []  # the line number of each document
        documents: list[Any] = []
        invalid: list[tuple[int, str]] = []
        lines = 0
        for number, line in enumerate(body.split(b"\n"), 1):
            if not line.strip():
                continue
            lines += 1
            try:
                documents.append(_parse(line))
                numbers.append(number)
            except InvalidEvent as exc:
                invalid.append((number, str(exc)))

        recorded = duplicate = anomalies = 0
        for start in range(0, len(documents), STORE_BATCH):
            results = await self._recorder.record_many(documents[start:start + STORE_BATCH], history=True,
                                                       live_allowed=self._live_allowed)
            for number, result in zip(numbers[start:start + STORE_BATCH], results, strict=True):
                if isinstance(result, Outcome):
                    recorded += not result.duplicate
                    duplicate += result.duplicate
                    anomalies += len(result.anomalies)
                    for name in result.failed_detectors:
                        log.error("detector %s raised on imported line %d: recorded without its checks",
                                  safe(name), number)
                elif isinstance(result, StoreUnavailable):
                    log.warning("store unavailable during an import, answering 503: %s", safe(result))
                    detail = (f"store unavailable: {result}" if isinstance(result, LayoutRefused)
                              else "store unavailable; send the whole chunk again")
                    return self._refuse("store_unavailable", 503, detail)
                elif isinstance(result, LivemodeRejected):
                    invalid.append((number, "livemode events need a real signing secret configured, "
                                            "not a placeholder"))
                elif isinstance(result, Unrecordable):
                    invalid.append((number, f"event cannot be recorded: {result}"))
                else:
                    invalid.append((number, str(result)))
        invalid.sort()
        self._requests.labels("imported").inc()
        return JSONResponse({
            "lines": lines, "recorded": recorded, "duplicate": duplicate,
            "invalid": len(invalid), "anomalies": anomalies,
            "errors": [{"line": number, "error": reason} for number, reason in invalid[:MAX_LISTED]],
        })
