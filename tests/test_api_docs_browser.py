"""/docs in a real headless Chromium: the API reference renders every endpoint of a live exporter,
and the page asks nothing of any host but the exporter (its CSP and its assets are its own)."""

import re
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from billingwatch.http import openapi_default
from testkit.processes import binary, free_port
from tests.conftest import running_exporter

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


@pytest.fixture
def outside() -> Iterator[Recorder]:
    """Chromium's proxy for every host but loopback: whatever reaches it would have left the machine."""
    server = Recorder(free_port())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def chromium(url: str, proxy: int, *mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--disable-client-side-phishing-detection",
         "--disable-domain-reliability", "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate",
         "--enable-logging=stderr", "--v=0", f"--proxy-server=http://127.0.0.1:{proxy}",
         "--virtual-time-budget=10000", "--window-size=1280,900", *mode, url],
        capture_output=True, text=True, timeout=120)


def test_docs_renders_every_endpoint_from_this_host_only(outside: Recorder, tmp_path_factory: pytest.TempPathFactory,
                                                        ) -> None:
    shots = tmp_path_factory.mktemp("screenshots")  # CI artefacts, not in the repository
    with running_exporter(BILLINGWATCH_API_TOKEN="a-token") as exporter:
        dom = chromium(exporter.url + "/docs", outside.server_address[1], "--dump-dom")
        shot = chromium(exporter.url + "/docs", outside.server_address[1], f"--screenshot={shots / 'docs.png'}")
    assert dom.returncode == 0 and shot.returncode == 0, dom.stderr[-2000:] + shot.stderr[-2000:]
    # Swagger UI ran (its script and ours are allowed by the CSP) and drew one row per operation.
    shown = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom.stdout))
    described = set(openapi_default.default_document()["paths"])
    assert shown == described, (shown, described)
    assert "Authorize" in dom.stdout  # the bearer scheme is offered
    assert Path(shots / "docs.png").stat().st_size > 10_000
    assert {host(r) for r in outside.requests} <= CHROMIUM_SERVICES, outside.requests
    # Nothing the page tried was blocked by its CSP either (Chromium logs each refusal).
    assert "Content Security Policy" not in dom.stderr + shot.stderr
