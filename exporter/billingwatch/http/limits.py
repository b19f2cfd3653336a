"""Request limits: header bytes and concurrency, through public settings and ASGI middleware only.

Three layers (docs/security.md#request-limits says which enforces what):
- uvicorn's public options, which `billingwatch serve` passes (server_options): the h11 parser,
  whose receive buffer is capped (httptools would buffer a header of any size), open connections,
  idle keep-alive. `uvicorn billingwatch.server:app --factory` takes the same as flags.
- RequestLimits, ASGI middleware in every app, refuses a request whose headers are over the cap
  (431) and one that would exceed the in-flight limit (503), before any route runs.
- The front proxy (proxy/Caddyfile): header size, a deadline for the headers, body size.
The body has its own deadline in the webhook (webhook.read_body).
"""

import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from billingwatch.config import Settings


def parser_buffer_bytes(max_header_bytes: int) -> int:
    """h11's receive-buffer cap: twice the header cap, so headers a little over it still reach
    RequestLimits for the precise 431; past this, uvicorn answers 400 and closes the connection."""
    return 2 * max_header_bytes


def server_options(settings: Settings) -> dict[str, Any]:
    """The limits among uvicorn.run's public options."""
    return {
        "http": "h11",  # the parser with a public buffer cap
        "h11_max_incomplete_event_size": parser_buffer_bytes(settings.max_header_bytes),
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_timeout,
    }


def header_bytes(scope: Scope) -> int:
    """The size of the request line's target and headers as received (4 bytes of framing per header)."""
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return target + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))


class RequestLimits:
    """Refuse oversized headers (431) and requests over the in-flight limit (503) before any route."""

    def __init__(self, app: ASGIApp, max_header_bytes: int, max_in_flight: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if header_bytes(scope) > self.max_header_bytes:
            await refuse(send, 431, "request headers too large")
            return
        if self.in_flight >= self.max_in_flight:
            await refuse(send, 503, "too many requests in flight; retry later")
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def refuse(send: Send, status: int, reason: str) -> None:
    body = json.dumps({"error": reason}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})
