"""proxy/Caddyfile, the compose stack's public entry (issue 11, item 4): `caddy validate` with
the environment compose gives it, then a real caddy in front of a real exporter on loopback:
Stripe's POST /webhooks/stripe passes, nothing else does, and the limits hold."""

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from billingwatch.fixtures import stripe_events as se
from testkit.processes import Exporter, binary, free_port, wait_until
from tests.conftest import ROOT, SECRET, running_exporter
from tests.metrics import scrape
from tests.test_compose import ENV_EXAMPLE, FILLED, compose
from tests.test_request_limits import read_until_closed

CADDYFILE = ROOT / "proxy" / "Caddyfile"
MAX_BODY = 8192  # small, so the tests send little; compose passes the exporter's own limit
HEADER_DEADLINE = 1  # seconds, short so the slow-header test is (the Caddyfile's default is 10 s)


@pytest.fixture(scope="module")
def compose_caddy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env_file = tmp_path_factory.mktemp("env") / "filled.env"
    env_file.write_text(ENV_EXAMPLE.read_text() + "".join(f"{k}={v}\n" for k, v in FILLED.items()))
    result = compose("config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    service: dict[str, Any] = yaml.safe_load(result.stdout)["services"]["caddy"]
    return service


def caddy_env(home: Path, **values: str) -> dict[str, str]:
    # Caddy keeps state under $HOME/XDG dirs: a directory of the test's own.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "CADDY_"))}
    env.update({"HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config")})
    env.update(values)
    return env


def test_shipped_caddyfile_validates_with_the_compose_environment(compose_caddy: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    assert compose_caddy["volumes"][0].startswith(f"{CADDYFILE}:/etc/caddy/Caddyfile")
    env = caddy_env(tmp_path, **{k: str(v) for k, v in compose_caddy["environment"].items()})
    result = subprocess.run([binary("caddy"), "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr
    adapted = subprocess.run([binary("caddy"), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert '"dial":"exporter:9786"' in adapted.stdout and '"max_size":1048576' in adapted.stdout


class Caddy:
    def __init__(self, port: int, admin_port: int) -> None:
        self.port = port
        self.admin_port = admin_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def run_caddy(caddyfile: Path, upstream: Exporter, home: Path, **extra_env: str) -> Iterator[Caddy]:
    caddy = Caddy(free_port(), free_port())
    env = caddy_env(home, BILLINGWATCH_PUBLIC_ADDRESS=f"http://127.0.0.1:{caddy.port}",
                    BILLINGWATCH_UPSTREAM=f"127.0.0.1:{upstream.port}", BILLINGWATCH_MAX_BODY_BYTES=str(MAX_BODY),
                    CADDY_ADMIN=f"localhost:{caddy.admin_port}", **extra_env)
    process = subprocess.Popen([binary("caddy"), "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
                               env=env, stdout=subprocess.DEVNULL, stderr=(home / "caddy.log").open("wb"))
    try:
        wait_until(lambda: httpx.get(caddy.url + "/").status_code > 0, what="caddy")
        yield caddy
    finally:
        process.terminate()
        process.wait(15)


# One exporter and one Caddy for the module (each test counts what it adds, not what is there).
@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    with running_exporter(BILLINGWATCH_MAX_BODY_BYTES=str(MAX_BODY)) as running:
        yield running


@pytest.fixture(scope="module")
def caddy(exporter: Exporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Caddy]:
    yield from run_caddy(CADDYFILE, exporter, tmp_path_factory.mktemp("caddy"),
                         BILLINGWATCH_READ_HEADER_TIMEOUT=f"{HEADER_DEADLINE}s")


def requests_seen(exporter: Exporter) -> float:
    return sum(v for (name, _), v in scrape(exporter.url).items() if name == "billingwatch_webhook_requests_total")


def test_signed_webhook_passes_and_nothing_else_does(caddy: Caddy, exporter: Exporter) -> None:
    before = requests_seen(exporter)
    payload = se.body(se.event("charge.succeeded", se.charge()))
    response = httpx.post(caddy.url + "/webhooks/stripe", content=payload, headers=se.signed_headers(payload, SECRET))
    assert response.status_code == 200 and response.json()["received"] is True
    for method, path in (("GET", "/api/anomalies"), ("GET", "/api/detectors"), ("GET", "/metrics"), ("GET", "/"),
                         ("GET", "/webhooks/stripe"), ("POST", "/api/anomalies"), ("POST", "/metrics"),
                         ("POST", "/webhooks/stripe/../../api/anomalies"), ("POST", "/webhooks/stripe/..%2fmetrics")):
        answer = httpx.request(method, caddy.url + path, content=payload if method == "POST" else None)
        assert answer.status_code in (403, 404), (method, path, answer.status_code)
        assert "billingwatch_" not in answer.text and "cus_" not in answer.text
    assert requests_seen(exporter) == before + 1


@pytest.mark.parametrize("case", ["declared", "chunked", "header"])
def test_oversize_body_or_header_is_refused_by_caddy(caddy: Caddy, exporter: Exporter, case: str) -> None:
    url = caddy.url + "/webhooks/stripe"
    before = requests_seen(exporter)
    big = b"x" * (MAX_BODY + 1)
    if case == "declared":
        response = httpx.post(url, content=big)
        assert response.status_code == 413
    elif case == "chunked":  # no Content-Length: Stripe always sends one
        response = httpx.post(url, content=iter([big[:100], big[100:]]))
        assert response.status_code == 411
    else:
        response = httpx.post(url, content=b"{}", headers={"Stripe-Signature": "t=1," + "v1=a," * 4000})
        assert response.status_code == 431
    assert requests_seen(exporter) == before  # refused before the exporter saw it


def test_slow_headers_are_dropped_by_caddy_at_its_deadline(caddy: Caddy, exporter: Exporter) -> None:
    """The deadline for headers is the proxy's: uvicorn has no public one (docs/security.md#request-limits)."""
    before = requests_seen(exporter)
    idle = socket.create_connection(("127.0.0.1", caddy.port))  # connected, sends nothing
    partial = socket.create_connection(("127.0.0.1", caddy.port))
    partial.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for sock in (idle, partial):
        answer, lasted = read_until_closed(sock, 10)
        sock.close()
        # Go's server closes a connection whose headers time out without an answer.
        assert answer == b"" and lasted < HEADER_DEADLINE + 5, (answer[:100], lasted)
    assert requests_seen(exporter) == before


def test_admin_api_answers_the_healthcheck(caddy: Caddy, compose_caddy: dict[str, Any]) -> None:
    """The compose healthcheck asks Caddy's admin API on localhost; here on a port of its own."""
    probe = compose_caddy["healthcheck"]["test"][-1]
    assert probe == f"http://{compose_caddy['environment']['CADDY_ADMIN']}/config/"
    assert httpx.get(f"http://localhost:{caddy.admin_port}/config/").status_code == 200


def test_api_through_a_proxy_that_forwards_everything_is_still_refused(exporter: Exporter, tmp_path: Path) -> None:
    """Defence in depth: a proxy on the same host (here Caddy forwarding every path) adds
    X-Forwarded-For, so the exporter serves it no customer data and honours no replay header."""
    lax = tmp_path / "Caddyfile"
    lax.write_text("{\n\tadmin {$CADDY_ADMIN}\n}\n{$BILLINGWATCH_PUBLIC_ADDRESS} {\n"
                   "\treverse_proxy {$BILLINGWATCH_UPSTREAM}\n}\n")
    for caddy in run_caddy(lax, exporter, tmp_path):
        for path in ("/api/anomalies", "/api/detectors"):
            response = httpx.get(caddy.url + path)
            assert response.status_code == 401 and "BILLINGWATCH_API_TOKEN" in response.json()["error"]
        assert httpx.get(exporter.url + "/api/anomalies").status_code == 200  # direct loopback is served
        payload = se.body(se.event("charge.succeeded", se.charge()))
        replay = httpx.post(caddy.url + "/webhooks/stripe", content=payload,
                            headers={**se.signed_headers(payload, SECRET), "BillingWatch-Replay": "1"})
        assert replay.status_code == 403
