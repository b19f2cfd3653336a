"""A recording proxy for headless Chromium: every request that would leave the machine lands here
(the browser tests point --proxy-server at it and bypass only loopback)."""

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from testkit.processes import free_port

# Chromium's own services (component updates, sign-in), which it calls with or without a page
# open even with the flags below; any other host reaching the proxy came from the page.
CHROMIUM_SERVICES = {"update.googleapis.com", "accounts.google.com", "clients2.google.com"}


def host(request_line: str) -> str:
    """The host a proxied request line names: CONNECT host:port, or GET http://host/..."""
    target = request_line.split()[1] if len(request_line.split()) > 1 else request_line
    return target.split("/")[2].split(":")[0] if "://" in target else target.split(":")[0]


class Recorder(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.requests: list[str] = []


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(4096).decode("latin-1").strip()
        assert isinstance(self.server, Recorder)
        self.server.requests.append(line)
        self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")


@contextmanager
def recording_proxy() -> Iterator[Recorder]:
    """Chromium's proxy for every host but loopback: whatever reaches it would have left the machine."""
    server = Recorder(free_port())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
