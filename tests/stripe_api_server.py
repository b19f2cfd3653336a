"""A local HTTP server that answers like Stripe's Events API (GET /v1/events), for the stripe SDK.

Real HTTP on a free loopback port, in a thread: list pages with `has_more` and `starting_after`,
the `created[gte|lte]` and `types[]` filters, Stripe's error shape, and a 429 with
`Stripe-Should-Retry: true` on the first call so the SDK's own retries are exercised.
"""

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "rk_test_restricted_events_read_only"


class StripeEventsApi:
    def __init__(self, events: list[dict[str, Any]], page_size: int = 3, fail_first: bool = True) -> None:
        self.events = sorted(events, key=lambda e: (e["created"], e["id"]), reverse=True)  # newest first
        self.page_size = page_size
        self.fail_first = fail_first
        self.requests: list[dict[str, list[str]]] = []
        self.statuses: list[int] = []
        self.url = ""

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        self.requests.append(query)
        if parts.path != "/v1/events":
            return 404, error("invalid_request_error", f"Unrecognized request URL (GET: {parts.path})"), {}
        if authorization != f"Bearer {API_KEY}":
            return 401, error("invalid_request_error", "Invalid API Key provided"), {}
        if self.fail_first and len(self.requests) == 1:
            return 429, error("rate_limit_error", "Too many requests hit the API too quickly."), \
                {"Stripe-Should-Retry": "true"}
        gte = int(query.get("created[gte]", ["0"])[0])
        lte = int(query.get("created[lte]", [str(2**62)])[0])
        types = {v for k, vs in query.items() if k.startswith("types[") for v in vs}
        matching = [e for e in self.events if gte <= e["created"] <= lte and (not types or e["type"] in types)]
        after = query.get("starting_after", [None])[0]
        if after is not None:
            ids = [e["id"] for e in matching]
            matching = matching[ids.index(after) + 1:]
        limit = min(int(query.get("limit", ["10"])[0]), self.page_size)
        page = matching[:limit]
        return 200, {"object": "list", "url": "/v1/events", "has_more": len(matching) > limit, "data": page}, {}


def error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


@contextmanager
def stripe_events_api(events: list[dict[str, Any]], **options: Any) -> Iterator[StripeEventsApi]:
    api = StripeEventsApi(events, **options)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, headers = api.answer(self.path, self.headers.get("Authorization"))
            api.statuses.append(status)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Request-Id", "req_local")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

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
