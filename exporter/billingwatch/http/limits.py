"""Request limits: header bytes, concurrency, and a deadline for the headers.

Two layers, because `uvicorn billingwatch.server:app --factory` can bypass the first:
- HttpProtocol, the uvicorn protocol `billingwatch serve` runs, counts header bytes while they
  arrive (httptools itself buffers a header of any size) and closes a connection whose headers
  take longer than the read timeout (uvicorn has no such deadline).
- RequestLimits, ASGI middleware in every app, refuses a request whose headers are over the cap
  (431) and one that would exceed the in-flight limit (503), before any route runs.
The body has its own deadline in the webhook (read_body).
"""

import asyncio
import functools
import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from billingwatch.config import from_env


@functools.cache
def protocol_limits() -> tuple[int, int]:
    """(max header bytes, header deadline in seconds), from the environment `serve` checked at start."""
    settings = from_env()
    return settings.max_header_bytes, settings.read_timeout


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size cap (431) and a header deadline."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._max_header_bytes, self._header_timeout = protocol_limits()
        self._in_headers = True
        self._header_bytes = 0
        self._tail = b""  # the last bytes seen, to find a header end split across two reads
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            # Count only the bytes up to the blank line that ends the headers, not the body after it.
            end = (self._tail + data).find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = data[-3:]
            if self._header_bytes > self._max_header_bytes:
                self._refuse(431, "request headers too large")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_headers, self._header_bytes, self._tail = True, 0, b""

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_deadline()  # the next request on this keep-alive connection gets the same deadline

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self._header_deadline = self.loop.call_later(self._header_timeout, self._headers_too_slow)

    def _disarm_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._in_headers and not self.transport.is_closing():
            if self._header_bytes:
                self._refuse(408, "request headers not received in time")
            else:
                self.transport.close()

    def _refuse(self, status: int, reason: str) -> None:
        body = json.dumps({"error": reason}).encode()
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body,
        ]))
        self.transport.close()


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
