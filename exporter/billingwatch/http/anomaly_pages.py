"""/anomalies (the list), /anomalies/<id> (one finding and its evidence) and the feedback
buttons (POST /anomalies/<id>/feedback). Customer data: the access rule of /events
(http/access.py); a verdict only from a page of this site (http/same_origin.py)."""

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from billingwatch.anomaly_ref import anomalies_path, anomaly_id, anomaly_path
from billingwatch.config import Settings
from billingwatch.detectors import Detector, thresholds
from billingwatch.http.access import authorised
from billingwatch.http.anomaly_query import ID, RANGES, parse_query, select
from billingwatch.http.same_origin import same_origin
from billingwatch.http.stripe_links import dashboard_url, kind_of
from billingwatch.http.views import HEADERS, money, problem, render
from billingwatch.levels import ALERT_SEVERITIES, PRIORITIES, shown
from billingwatch.metrics.fields import feedback_field
from billingwatch.metrics.labels import VERDICTS
from billingwatch.notify.alertmanager import RUNBOOK, push_settings
from billingwatch.store import Store, StoreUnavailable, Unrecordable

TITLE = "BillingWatch anomalies"
MAX_FORM_BYTES = 1024  # "verdict=false_positive" and little else
VERDICT_TEXT = {"expected": "expected", "false_positive": "false positive"}
NOT_SIGNED_IN = ("These pages show customer data: send BILLINGWATCH_API_TOKEN as 'Authorization: Bearer <token>' "
                 "(a reverse proxy can add it), or, without a token, open them from this machine.")


def unauthorised() -> Response:
    return problem(TITLE, NOT_SIGNED_IN, 401, {"WWW-Authenticate": "Bearer"})


def object_ids(record: Mapping[str, Any]) -> list[str]:
    """Every Stripe id the record names, its own objects first, without repeats."""
    ids: list[Any] = [record.get(k) for k in ("customer", "charge", "invoice", "subscription")]
    related = record.get("related")
    ids += related if isinstance(related, list) else []
    return list(dict.fromkeys(i for i in ids if isinstance(i, str) and i))


def link(object_id: str, livemode: bool) -> dict[str, Any]:
    return {"id": object_id, "kind": kind_of(object_id) or "object", "dashboard": dashboard_url(object_id, livemode)}


def related_events(record: Mapping[str, Any], lines: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The log lines about the anomaly's event and objects (not its customer's every event),
    recorded ones only, in event-time order; a redelivery shows once."""
    ids = set(object_ids(record)) - {record.get("customer")}
    livemode = record.get("livemode") is True
    found: dict[str, dict[str, Any]] = {}
    for line in lines:
        event = line.get("id")
        if not isinstance(event, str) or event in found or line.get("result") == "rejected":
            continue
        if event == record.get("event_id") or line.get("object") in ids:
            found[event] = {**line, "dashboard": dashboard_url(event, livemode),
                            "object_dashboard": dashboard_url(str(line.get("object") or ""), livemode),
                            "explorer": "/events?" + urlencode({"object": line.get("object") or event})}
    return sorted(found.values(), key=lambda e: (e.get("created") or 0, e.get("received") or 0, e["id"]))


def totals(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """The related events' amounts, summed per currency (never across currencies)."""
    sums: dict[str, int] = {}
    for event in events:
        amount, currency = event.get("amount"), event.get("currency")
        if isinstance(amount, int) and not isinstance(amount, bool) and isinstance(currency, str):
            sums[currency] = sums.get(currency, 0) + amount
    return [money(amount, currency) for currency, amount in sorted(sums.items())]


class AnomalyPages:
    def __init__(self, settings: Settings, store: Store, detectors: list[Detector],
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._store = store
        self._detectors = {d.name: d for d in detectors}
        self._clock = clock
        self._runbook = f"{push_settings(settings).runbook_url.rstrip('/')}/{RUNBOOK}"

    async def _record(self, wanted: str) -> dict[str, Any] | None:
        """The anomaly with this id, if the log still holds it; raises StoreUnavailable."""
        if not ID.fullmatch(wanted):
            return None
        records = await self._store.anomalies(self._settings.anomaly_log_size)
        return next((shown(r) for r in records if anomaly_id(r) == wanted), None)

    async def index(self, request: Request) -> Response:
        if not authorised(request, self._settings.api_token):
            return unauthorised()
        query = parse_query(request.query_params, self._detectors)
        if isinstance(query, str):
            return problem(TITLE, query, 400)
        try:
            records = [shown(r) for r in await self._store.anomalies(self._settings.anomaly_log_size)]
            page = select(records, query, self._clock())
            ids = [anomaly_id(r) for r in page.records]
            verdicts = await self._store.verdicts(ids)
        except StoreUnavailable:
            return problem(TITLE, "store unavailable; retry later", 503)
        if page.cursor_lost:
            return problem(TITLE, "the anomalies of this page have left the log (BILLINGWATCH_ANOMALY_LOG_SIZE): "
                           "start again from the newest", 410)
        filters = query.params()
        rows = [{**r, "id": i, "path": anomaly_path(r), "verdict": verdicts.get(i, {}).get("verdict"),
                 "customer_link": anomalies_path(**{**filters, "customer": r.get("customer")})}
                for r, i in zip(page.records, ids, strict=True)]
        next_page = None if page.next_cursor is None else \
            "/anomalies?" + urlencode({**filters, "cursor": page.next_cursor})
        return render("anomalies.html", {
            "query": query, "filters": filters, "rows": rows, "next_page": next_page,
            "first_page": anomalies_path(**filters), "detectors": sorted(self._detectors),
            "severities": ALERT_SEVERITIES, "priorities": PRIORITIES, "ranges": list(RANGES),
            "verdict_text": VERDICT_TEXT,
            "log_size": self._settings.anomaly_log_size,
        })

    async def detail(self, request: Request) -> Response:
        if not authorised(request, self._settings.api_token):
            return unauthorised()
        wanted = request.path_params["anomaly"]
        try:
            record = await self._record(wanted)
            if record is None:
                return problem(TITLE, "no such anomaly in the log (it may have left it: BILLINGWATCH_ANOMALY_LOG_SIZE)",
                               404)
            lines = await self._store.events(self._settings.event_log_size)
            verdict = (await self._store.verdicts([wanted])).get(wanted)
        except StoreUnavailable:
            return problem(TITLE, "store unavailable; retry later", 503)
        livemode = record.get("livemode") is True
        events = related_events(record, lines)
        detector = self._detectors.get(str(record.get("detector")))
        customer = record.get("customer") if isinstance(record.get("customer"), str) else None
        return render("anomaly.html", {
            "a": record, "id": wanted, "livemode": livemode, "events": events, "totals": totals(events),
            "amount": money(record.get("amount"), record.get("currency")),
            "customer": None if customer is None else link(customer, livemode),
            "customer_anomalies": None if customer is None else anomalies_path(customer=customer),
            "objects": [link(i, livemode) for i in object_ids(record) if i != customer],
            "event_dashboard": dashboard_url(str(record.get("event_id", "")), livemode),
            "detector": detector, "thresholds": thresholds(detector) if detector is not None else {},
            "details": record.get("details") if isinstance(record.get("details"), dict) else {},
            "runbook": self._runbook, "verdict": verdict, "verdicts": VERDICTS, "verdict_text": VERDICT_TEXT,
            "detector_anomalies": anomalies_path(detector=str(record.get("detector"))),
        })

    async def feedback(self, request: Request) -> Response:
        if not authorised(request, self._settings.api_token):
            return unauthorised()
        if not same_origin(request, self._settings.external_url):
            return problem(TITLE, "refused: a verdict is taken only from a page of this site (cross-site request)",
                           403)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return problem(TITLE, "form too large", 413)
        try:
            verdict = (parse_qs(body.decode("latin-1"), max_num_fields=8).get("verdict") or [""])[0]
        except ValueError:  # more fields than any form of ours sends
            verdict = ""
        if verdict not in VERDICTS:
            return problem(TITLE, f"verdict must be one of {', '.join(VERDICTS)}", 400)
        wanted = request.path_params["anomaly"]
        try:
            record = await self._record(wanted)
            if record is None:
                return problem(TITLE, "no such anomaly in the log", 404)
            counter = feedback_field(str(record["detector"]), verdict)
            await self._store.set_verdict(wanted, verdict, int(self._clock()), counter)
        except StoreUnavailable:
            return problem(TITLE, "store unavailable; retry later", 503)
        except Unrecordable as exc:
            return problem(TITLE, f"verdict not stored: {exc}", 507)
        # Post/redirect/get: a reload does not post again.
        return RedirectResponse(anomaly_path(record), status_code=303, headers=HEADERS)
