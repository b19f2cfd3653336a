"""The recent-events log for people: the query both /api/events and the /events page take, and
the /events page itself (server-rendered HTML, no JavaScript, nothing loaded from elsewhere).

The page shows customer ids, so it has the API's authorization (http/access.py). Every value is
escaped; the Content-Security-Policy allows the one inline stylesheet (by its hash), forms to
this origin, and nothing else: no script, image, font or frame from anywhere.
"""

import base64
import hashlib
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from billingwatch.anomaly_ref import anomaly_path
from billingwatch.config import Settings
from billingwatch.http.access import authorised
from billingwatch.levels import shown as shown_levels
from billingwatch.money import amount_text
from billingwatch.store import Store, StoreUnavailable

DEFAULT_LIMIT = 100
# The text filters: a Stripe event type, or an id (Stripe ids are far shorter).
TEXT_FILTERS = {"type": 80, "customer": 255, "object": 255}


@dataclass(frozen=True)
class EventQuery:
    type: str | None = None
    customer: str | None = None
    object: str | None = None
    since: int | None = None  # unix seconds: lines received at or after it
    limit: int = DEFAULT_LIMIT

    @property
    def filtered(self) -> bool:
        return any(v is not None for v in (self.type, self.customer, self.object, self.since))

    def matches(self, line: Mapping[str, Any]) -> bool:
        return (
            self.type in (None, line.get("type"))
            and self.customer in (None, line.get("customer"))
            and self.object in (None, line.get("object"))
            and (self.since is None or (isinstance(line.get("received"), int) and line["received"] >= self.since))
        )


def parse_query(params: Mapping[str, str], max_limit: int) -> EventQuery | str:
    """The query, or a one-line reason it is refused. An empty value is no filter (an HTML form
    sends its empty fields)."""
    raw_limit = params.get("limit") or str(DEFAULT_LIMIT)
    # ASCII digits only and few of them: isdigit() takes "²", and int() of 5,000 digits raises.
    if not re.fullmatch(r"[0-9]{1,9}", raw_limit) or int(raw_limit) < 1:
        return "limit must be a positive integer"
    since: int | None = None
    if params.get("since"):
        if not re.fullmatch(r"[0-9]{1,12}", params["since"]):
            return "since must be a unix time in seconds (ASCII digits)"
        since = int(params["since"])
    texts: dict[str, str | None] = {}
    for name, longest in TEXT_FILTERS.items():
        value = params.get(name) or None
        if value is not None and (len(value) > longest or not (value.isascii() and value.isprintable())):
            return f"{name} must be at most {longest} printable characters"
        texts[name] = value
    return EventQuery(texts["type"], texts["customer"], texts["object"], since, min(int(raw_limit), max_limit))


async def select(store: Store, query: EventQuery, log_size: int) -> list[dict[str, Any]]:
    """The log lines the query asks for, newest first. A filter reads the whole log (bounded by
    BILLINGWATCH_EVENT_LOG_SIZE); raises StoreUnavailable."""
    if not query.filtered:
        return await store.events(query.limit)
    return [line for line in await store.events(log_size) if query.matches(line)][: query.limit]


def explorer_path(record: Mapping[str, Any]) -> str:
    """Where the explorer shows an anomaly's events: its customer's, else its object's.
    A guest payer ("card:<fingerprint>") is no customer id the log knows: the charge then."""
    customer = record.get("customer")
    if isinstance(customer, str) and customer and not customer.startswith("card:"):
        return "/events?" + urlencode({"customer": customer})
    for kind in ("charge", "invoice", "subscription"):
        if isinstance(record.get(kind), str) and record[kind]:
            return "/events?" + urlencode({"object": record[kind]})
    return "/events"


# ---------------------------------------------------------------- the page

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.25rem 1.5rem;color:#1d1d1f}
h1{font-size:1.35rem;margin:0 0 .25rem}
p.meta{color:#555;margin:0 0 .75rem}
form{display:flex;gap:.75rem;align-items:flex-end;flex-wrap:wrap;margin:0 0 1rem}
label{display:flex;flex-direction:column;font-size:.8rem;color:#555}
input{font:inherit;padding:.25rem .4rem;width:15rem}
button{font:inherit;padding:.3rem .9rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e3e3e3;vertical-align:top}
th{background:#f5f5f7;position:sticky;top:0}
td.num{text-align:right;white-space:nowrap}
td.when{white-space:nowrap}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
tr.flagged{background:#fff5f5}
.anomaly{border-left:3px solid #b00020;padding-left:.4rem;margin:.1rem 0}
.sev-P2{border-color:#e65100}.sev-P3{border-color:#f9a825}.sev-P4{border-color:#607d8b}
.tag{font-size:.75rem;padding:0 .3rem;border-radius:3px;background:#eceff1;margin-left:.25rem}
.rejected{color:#b00020}.duplicate{color:#666}.quarantined{color:#e65100}
.error{color:#b00020}
a{color:#0b57d0;text-decoration:none}a:hover{text-decoration:underline}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
# The page names customers: no copy in a shared cache, no URL (with its filter) sent on as a referrer.
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
           "X-Content-Type-Options": "nosniff"}


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(seconds: Any) -> str:
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        return ""
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def amount_of(line: Mapping[str, Any]) -> str:
    amount, currency = line.get("amount"), line.get("currency")
    return amount_text(amount, currency) if isinstance(amount, int) and not isinstance(amount, bool) else ""


def filter_link(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        return ""
    return f'<a href="/events?{esc(urlencode({name: value}))}"><code>{esc(value)}</code></a>'


class AnomalyIndex:
    """Anomaly records by the event that raised them and by every object id they name, so each
    shows beside all the events it relates to (both charges of a duplicate pair)."""

    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        self._by: dict[str, list[Mapping[str, Any]]] = {}
        for record in records:
            ids = [record.get("event_id"), *(record.get(k) for k in ("charge", "invoice", "subscription"))]
            related = record.get("related")
            ids += related if isinstance(related, list) else []
            for key in dict.fromkeys(i for i in ids if isinstance(i, str) and i):
                self._by.setdefault(key, []).append(record)

    def beside(self, line: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        found: dict[int, Mapping[str, Any]] = {}
        for key in (line.get("id"), line.get("object")):
            if isinstance(key, str):
                for record in self._by.get(key, []):
                    found.setdefault(id(record), record)
        return list(found.values())


def anomaly_html(record: Mapping[str, Any]) -> str:
    severity, prio = str(record.get("severity", "")), str(record.get("priority", ""))
    history = '<span class="tag">history</span>' if record.get("history") else ""
    return (f'<div class="anomaly sev-{esc(prio)}" data-detector="{esc(record.get("detector"))}" '
            f'data-event="{esc(record.get("event_id"))}"><b>{esc(record.get("detector"))}</b> '
            f'({esc(prio)} {esc(severity)}){history}: '
            f'<a href="{esc(anomaly_path(record))}">{esc(record.get("summary"))}</a></div>')


def row_html(line: Mapping[str, Any], anomalies: AnomalyIndex) -> str:
    found = anomalies.beside(line)
    result = str(line.get("result", ""))
    tags = "".join(f'<span class="tag">{t}</span>' for t, on in (
        ("history", line.get("history")), ("live", line.get("livemode") is True)) if on)
    reason = f"<br>{esc(line.get('reason'))}" if line.get("reason") else ""
    # Which configured account (several in BILLINGWATCH_ACCOUNTS_FILE) and which Connect account.
    accounts = "".join(f"<br><small>{label} {filter_link(param, line.get(key))}</small>"
                       for label, param, key in (("account", "account", "account_name"),
                                                 ("connected account", "connected_account", "account"))
                       if line.get(key))
    return (
        f'<tr class="event{" flagged" if found else ""}" data-event="{esc(line.get("id"))}" '
        f'data-customer="{esc(line.get("customer"))}" data-object="{esc(line.get("object"))}">'
        f'<td class="when">{esc(when(line.get("received")))}</td>'
        f'<td>{filter_link("type", line.get("type"))}</td>'
        f'<td><code>{esc(line.get("id"))}</code><br><small>created {esc(when(line.get("created")))}</small>'
        f'{accounts}</td>'
        f'<td>{filter_link("customer", line.get("customer"))}</td>'
        f'<td>{filter_link("object", line.get("object"))}</td>'
        f'<td class="num">{esc(amount_of(line))}</td>'
        f'<td class="{esc(result)}">{esc(result)}{tags}{reason}</td>'
        f'<td>{"".join(anomaly_html(r) for r in found)}</td></tr>'
    )


def page(title: str, body: str, status: int = 200, extra: Mapping[str, str] | None = None) -> HTMLResponse:
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
    return HTMLResponse(document, status_code=status, headers={**HEADERS, **(extra or {})})


def form_html(query: EventQuery | None) -> str:
    fields = "".join(
        f'<label>{name}<input name="{name}" maxlength="{longest}" '
        f'value="{esc(getattr(query, name, None) if query else None)}"></label>'
        for name, longest in TEXT_FILTERS.items()
    )
    return f'<form method="get" action="/events">{fields}<button type="submit">Filter</button> ' \
           '<a href="/events">Clear</a></form>'


QUARANTINE_SHOWN = 100


def quarantine_html(entries: Sequence[Mapping[str, Any]]) -> str:
    """The quarantine's entries, oldest first (none: nothing shown)."""
    if not entries:
        return ""
    rows = "\n".join(
        f'<tr><td class="when">{when(int(e.get("received") or 0))}</td><td>{esc(e.get("type"))}</td>'
        f'<td><code>{esc(e.get("id"))}</code></td><td class="quarantined">{esc(e.get("reason"))}</td></tr>'
        for e in entries)
    more = f" (the oldest {QUARANTINE_SHOWN}; all at /api/quarantine)" if len(entries) >= QUARANTINE_SHOWN else ""
    return (f'<h2>Quarantine</h2><p class="meta">{len(entries)} signed event(s) this version could not record, '
            f"kept unrecorded{more}: after an upgrade, <code>billingwatch requeue</code> records them.</p>"
            "<table><thead><tr><th>Received (UTC)</th><th>Type</th><th>Event</th><th>Reason</th></tr></thead>"
            f"<tbody>\n{rows}\n</tbody></table>")


class Explorer:
    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        self._store = store

    async def page(self, request: Request) -> Response:
        settings = self._settings
        if not authorised(request, settings.api_token):
            return page("BillingWatch events", "<h1>Recent events</h1><p class=\"error\">This page shows customer "
                        "data: send BILLINGWATCH_API_TOKEN as 'Authorization: Bearer &lt;token&gt;' (a reverse "
                        "proxy can add it), or, without a token, open it from this machine.</p>",
                        401, {"WWW-Authenticate": "Bearer"})
        query = parse_query(request.query_params, settings.event_log_size)
        if isinstance(query, str):
            return page("BillingWatch events", f'<h1>Recent events</h1>{form_html(None)}'
                        f'<p class="error">{esc(query)}</p>', 400)
        try:
            lines = await select(self._store, query, settings.event_log_size)
            anomalies = AnomalyIndex(map(shown_levels, await self._store.anomalies(settings.anomaly_log_size)))
            quarantined = await self._store.quarantined(QUARANTINE_SHOWN)
        except StoreUnavailable:
            return page("BillingWatch events", '<h1>Recent events</h1><p class="error">store unavailable; '
                        "retry later</p>", 503)
        shown = ", ".join(f"{name} {esc(value)}" for name in TEXT_FILTERS if (value := getattr(query, name)))
        meta = (f"{len(lines)} event(s), newest first{' for ' + shown if shown else ''}; the log keeps the last "
                f"{settings.event_log_size} received (BILLINGWATCH_EVENT_LOG_SIZE). Store: {esc(self._store.kind)}.")
        head = ("<thead><tr><th>Received (UTC)</th><th>Type</th><th>Event</th><th>Customer</th><th>Object</th>"
                "<th>Amount</th><th>Result</th><th>Anomalies</th></tr></thead>")
        rows = "\n".join(row_html(line, anomalies) for line in lines) or \
            '<tr><td colspan="8">No events match.</td></tr>'
        body = (f"<h1>Recent events</h1><p class=\"meta\">{meta}</p>{quarantine_html(quarantined)}"
                f"{form_html(query)}<table>{head}<tbody>\n{rows}\n</tbody></table>")
        return page("BillingWatch events", body)
