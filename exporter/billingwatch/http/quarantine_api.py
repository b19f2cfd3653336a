"""/api/quarantine (the events kept unrecorded, oldest first) and POST /api/quarantine/requeue
(re-record them: recording/requeue.py). Customer data: the bearer token, or direct loopback."""

import json
import re

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from billingwatch.config import Settings
from billingwatch.http.access import authorised
from billingwatch.http.api import refused
from billingwatch.http.webhook import TooLarge, read_body
from billingwatch.recording.recorder import Recorder
from billingwatch.recording.requeue import requeue
from billingwatch.store import StoreUnavailable

MAX_BODY = 1024


def _limit(request: Request, default: int, cap: int) -> int | None:
    raw = request.query_params.get("limit", str(default))
    # ASCII digits only and few of them: isdigit() takes "²", and int() of 5,000 digits raises.
    if not re.fullmatch(r"[0-9]{1,9}", raw) or int(raw) < 1:
        return None
    return min(int(raw), cap)


class QuarantineApi:
    def __init__(self, settings: Settings, recorder: Recorder) -> None:
        self._settings = settings
        self._recorder = recorder

    async def entries(self, request: Request) -> Response:
        settings = self._settings
        if not authorised(request, settings.api_token):
            return refused()
        limit = _limit(request, 100, settings.quarantine_size)
        if limit is None:
            return JSONResponse({"error": "limit must be a positive integer"}, status_code=400)
        body = request.query_params.get("body", "false")
        if body not in ("true", "false"):
            return JSONResponse({"error": "body must be true or false"}, status_code=400)
        try:
            entries = await self._recorder.store.quarantined(limit, bodies=body == "true")
        except StoreUnavailable:
            return JSONResponse({"error": "store unavailable"}, status_code=503)
        return JSONResponse({"quarantine": entries})

    async def requeue(self, request: Request) -> Response:
        settings = self._settings
        if not authorised(request, settings.api_token):
            return refused()
        # A web page can POST text/plain cross-site without a preflight, never application/json.
        if request.headers.get("content-type", "").split(";", 1)[0].strip().lower() != "application/json":
            return JSONResponse({"error": "Content-Type must be application/json"}, status_code=415)
        try:  # nothing is read from it: a small bound, and the read timeout of a webhook body
            body = json.loads(await read_body(request, MAX_BODY, settings.read_timeout))
        except (TooLarge, TimeoutError, ClientDisconnect, ValueError, RecursionError):
            body = None
        if body != {}:
            return JSONResponse({"error": "the body must be {}: the parameters are in the query"},
                                status_code=400)
        limit = _limit(request, settings.quarantine_size, settings.quarantine_size)  # default: all
        if limit is None:
            return JSONResponse({"error": "limit must be a positive integer"}, status_code=400)
        try:
            result = await requeue(self._recorder, limit)
        except StoreUnavailable:
            return JSONResponse({"error": "store unavailable"}, status_code=503)
        return JSONResponse(result.as_dict())
