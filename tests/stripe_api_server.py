"""A local HTTP server that answers like Stripe's Events and Subscriptions APIs (GET /v1/events,
GET /v1/subscriptions), for the stripe SDK.

Real HTTP on a free loopback port, in a thread: list pages with `has_more` and `starting_after`,
the `created[gte|lte]` and `types[]` filters of events, the `status` filter of subscriptions,
Stripe's error shape (a 403 for a path the key may not read), and a 429 with
`Stripe-Should-Retry: true` on the first call so the SDK's own retries are exercised.
"""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "rk_test_restricted_events_and_subscriptions_read_only"
ENDED = ("canceled", "incomplete_expired")


def status_matches(wanted: str | None, status: str) -> bool:
    """GET /v1/subscriptions?status=...: absent lists all but canceled (as Stripe documents), `all`
    everything, `ended` canceled and incomplete_expired, any other value that status."""
    if wanted is None:
        return status != "canceled"
    return wanted == "all" or status in ENDED if wanted in ("all", "ended") else status == wanted


class StripeEventsApi:
    def __init__(self, events: list[dict[str, Any]], page_size: int = 3, fail_first: bool = True,
                 subscriptions: list[dict[str, Any]] | None = None, forbidden: tuple[str, ...] = (),
                 clock_offset: int = 0, broken_after: int | None = None) -> None:
        self.events = sorted(events, key=lambda e: (e["created"], e["id"]), reverse=True)  # newest first
        self.subscriptions = sorted(subscriptions or [], key=lambda s: (s["created"], s["id"]), reverse=True)
        self.page_size = page_size
        self.fail_first = fail_first
        self.forbidden = forbidden  # paths the key has no permission for: 403, as for a restricted key
        self.clock_offset = clock_offset  # seconds Stripe's clock (its Date header) runs ahead of ours
        self.broken_after = broken_after  # subscription pages served before every later one is a 500
        self.requests: list[dict[str, list[str]]] = []  # GET /v1/events queries
        self.subscription_requests: list[dict[str, list[str]]] = []
        self.statuses: list[int] = []
        self.http_libraries: set[str] = set()  # the SDK's HTTP client per request (its client user agent)
        self.url = ""

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        first = not self.statuses
        if parts.path == "/v1/subscriptions":
            self.subscription_requests.append(query)
        elif parts.path == "/v1/events":
            self.requests.append(query)
        else:
            return 404, error("invalid_request_error", f"Unrecognized request URL (GET: {parts.path})"), {}
        if authorization != f"Bearer {API_KEY}":
            return 401, error("invalid_request_error", "Invalid API Key provided"), {}
        if parts.path in self.forbidden:
            return 403, error("invalid_request_error", f"The provided key 'rk_test_***' does not have the required "
                              f"permissions for this endpoint ({parts.path})."), {}
        if self.fail_first and first:
            return 429, error("rate_limit_error", "Too many requests hit the API too quickly."), \
                {"Stripe-Should-Retry": "true"}
        if parts.path == "/v1/subscriptions":
            if self.broken_after is not None and len(self.subscription_requests) > self.broken_after:
                return 500, error("api_error", "Something went wrong on Stripe's end."), {}
            wanted = query.get("status", [None])[0]
            listed = [s for s in self.subscriptions if status_matches(wanted, s["status"])]
            return 200, page_of(listed, query, self.page_size, parts.path), {}
        gte = int(query.get("created[gte]", ["0"])[0])
        lte = int(query.get("created[lte]", [str(2**62)])[0])
        types = {v for k, vs in query.items() if k.startswith("types[") for v in vs}
        matching = [e for e in self.events if gte <= e["created"] <= lte and (not types or e["type"] in types)]
        return 200, page_of(matching, query, self.page_size, parts.path), {}


def page_of(matching: list[dict[str, Any]], query: dict[str, list[str]], page_size: int, url: str) -> dict[str, Any]:
    """One page of a Stripe list: after `starting_after`, at most `limit` (and page_size) objects."""
    after = query.get("starting_after", [None])[0]
    if after is not None:
        ids = [o["id"] for o in matching]
        matching = matching[ids.index(after) + 1:]
    limit = min(int(query.get("limit", ["10"])[0]), page_size)
    return {"object": "list", "url": url, "has_more": len(matching) > limit, "data": matching[:limit]}


def error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


@contextmanager
def stripe_events_api(events: list[dict[str, Any]], **options: Any) -> Iterator[StripeEventsApi]:
    api = StripeEventsApi(events, **options)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, headers = api.answer(self.path, self.headers.get("Authorization"))
            api.statuses.append(status)
            api.http_libraries.add(json.loads(self.headers.get("X-Stripe-Client-User-Agent", "{}")).get("httplib", ""))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Request-Id", "req_local")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def date_time_string(self, timestamp: float | None = None) -> str:
            return super().date_time_string(time.time() + api.clock_offset if timestamp is None else timestamp)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
