"""/api/detectors, /api/anomalies and /api/events: customer data, for the bearer token (or direct loopback) only."""

import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from billingwatch.config import Settings
from billingwatch.detectors import Detector, severities, thresholds
from billingwatch.http.access import REFUSED, authorised
from billingwatch.http.csv_export import ANOMALY_COLUMNS, EVENT_COLUMNS, format_error, listing
from billingwatch.http.explorer import explorer_path, parse_query, select
from billingwatch.levels import alert_severity, priority, shown
from billingwatch.store import Store, StoreUnavailable


def refused() -> JSONResponse:
    return JSONResponse({"error": REFUSED}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class Api:
    def __init__(self, settings: Settings, store: Store, detectors: list[Detector]) -> None:
        self._settings = settings
        self._store = store
        self._detectors = detectors

    async def detectors(self, request: Request) -> Response:
        if not authorised(request, self._settings.api_token):
            return refused()
        return JSONResponse(
            {
                "detectors": [
                    {
                        "name": d.name,
                        "severity": alert_severity(d.severity),
                        "priority": priority(d.severity),
                        "severities": list(dict.fromkeys(alert_severity(s) for s in severities(d))),
                        "priorities": [priority(s) for s in severities(d)],
                        "description": d.description,
                        "event_types": sorted(d.event_types),
                        "thresholds": thresholds(d),
                    }
                    for d in self._detectors
                ]
            }
        )

    async def anomalies(self, request: Request) -> Response:
        settings = self._settings
        if not authorised(request, settings.api_token):
            return refused()
        if (bad_format := format_error(request.query_params)) is not None:
            return JSONResponse({"error": bad_format}, status_code=400)
        raw_limit = request.query_params.get("limit", "100")
        # ASCII digits only and few of them: isdigit() takes "²", and int() of 5,000 digits raises.
        if not re.fullmatch(r"[0-9]{1,9}", raw_limit) or int(raw_limit) < 1:
            return JSONResponse({"error": "limit must be a positive integer"}, status_code=400)
        limit = min(int(raw_limit), settings.anomaly_log_size)
        detector = request.query_params.get("detector")
        if detector is not None and detector not in {d.name for d in self._detectors}:
            return JSONResponse({"error": f"unknown detector {detector!r}"}, status_code=400)
        history = request.query_params.get("history")
        if history is not None and history not in ("true", "false"):
            return JSONResponse({"error": "history must be true or false"}, status_code=400)
        filtered = detector is not None or history is not None
        try:
            records = await self._store.anomalies(settings.anomaly_log_size if filtered else limit)
        except StoreUnavailable:
            return JSONResponse({"error": "store unavailable"}, status_code=503)
        if filtered:
            records = [
                r for r in records
                if detector in (None, r.get("detector")) and history in (None, str(r.get("history") is True).lower())
            ][:limit]
        # Each record links to the explorer: the events of its customer, the anomaly beside them.
        return listing(request.query_params, "anomalies", [{**shown(r), "explorer": explorer_path(r)} for r in records],
                       ANOMALY_COLUMNS)

    async def events(self, request: Request) -> Response:
        """The recent-events log, newest first, filtered by type, customer, object and time."""
        settings = self._settings
        if not authorised(request, settings.api_token):
            return refused()
        query = parse_query(request.query_params, settings.event_log_size)
        if isinstance(query, str):
            return JSONResponse({"error": query}, status_code=400)
        if (bad_format := format_error(request.query_params)) is not None:
            return JSONResponse({"error": bad_format}, status_code=400)
        try:
            lines = await select(self._store, query, settings.event_log_size)
        except StoreUnavailable:
            return JSONResponse({"error": "store unavailable"}, status_code=503)
        return listing(request.query_params, "events", lines, EVENT_COLUMNS)
