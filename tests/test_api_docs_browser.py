"""/docs in a real headless Chromium: the API reference renders every endpoint of a live exporter,
and the page asks nothing of any host but the exporter (its CSP and its assets are its own)."""

import re
import subprocess
from pathlib import Path

import pytest

from billingwatch.http import openapi_default
from testkit.browser import CHROMIUM_SERVICES, Recorder, host
from testkit.processes import binary
from tests.conftest import running_exporter


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
