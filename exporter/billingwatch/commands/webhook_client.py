"""A lean HTTP/1.1 client for replaying webhooks: keep-alive connections, POST, status and body.

replay over HTTP spent about 2 ms of CPU per request in httpx's layers (docs/benchmarks.md);
this does only what a webhook delivery needs: one request at a time per connection, a
Content-Length body in the answer (uvicorn's JSON answers), http:// or https://.
"""

import asyncio
import ssl
from urllib.parse import urlsplit

TIMEOUT = 30.0  # seconds for one request and its answer
MAX_HEADER_LINES = 100


class TransportError(Exception):
    """No usable answer: the connection failed, closed, timed out, or the answer was malformed."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class WebhookClient:
    """POSTs to one URL over up to `connections` keep-alive connections (one per request in flight)."""

    def __init__(self, url: str, connections: int) -> None:
        parts = urlsplit(url)
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._tls else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._authority = parts.netloc.rpartition("@")[2]
        self._idle: list[_Connection] = []
        self._max_idle = connections

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """The answer's status and body; TransportError when there is none.

        A kept-alive connection the server has since closed fails at once: that request is sent
        again on a new connection (even had it arrived, the event would come back a duplicate)."""
        while True:
            reused = bool(self._idle)
            connection = self._idle.pop() if reused else None
            try:
                async with asyncio.timeout(TIMEOUT):
                    if connection is None:
                        connection = _Connection(*await asyncio.open_connection(self._host, self._port,
                                                                                ssl=self._tls))
                    status, answer, keep = await self._exchange(connection, body, headers)
            except (OSError, EOFError, TimeoutError, ValueError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError) as exc:
                if connection is not None:
                    connection.close()
                if reused and isinstance(exc, EOFError | ConnectionError | asyncio.IncompleteReadError):
                    continue
                raise TransportError(type(exc).__name__) from exc
            if keep and len(self._idle) < self._max_idle:
                self._idle.append(connection)
            else:
                connection.close()
            return status, answer

    async def _exchange(self, connection: _Connection, body: bytes,
                        headers: dict[str, str]) -> tuple[int, bytes, bool]:
        head = [f"POST {self._target} HTTP/1.1", f"Host: {self._authority}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        connection.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await connection.writer.drain()
        status_line = await connection.reader.readline()
        if not status_line:
            raise EOFError  # the server closed an idle keep-alive connection: a retry reconnects
        version, status, _ = status_line.decode("latin-1").split(" ", 2)
        if not version.startswith("HTTP/1.") or not status.isdigit():
            raise ValueError("not an HTTP/1.x status line")
        length, keep = 0, version == "HTTP/1.1"
        for _ in range(MAX_HEADER_LINES):
            line = await connection.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection":
                keep = value == "keep-alive" or (keep and value != "close")
            elif name == "transfer-encoding":
                raise ValueError("chunked answers are not supported")
        else:
            raise ValueError("too many header lines")
        return int(status), await connection.reader.readexactly(length), keep

    async def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
