"""Single sign-on in front of BillingWatch (issue 24): the real Caddy runs
proxy/forward-auth.Caddyfile with `forward_auth` to a small oauth2-proxy style auth service
(2xx with a user header allows, 401 denies), in front of a real exporter that requires sign-in
(a web configuration file and the API token). Caddy adds the token only to what the auth
service allowed; Stripe's webhook passes without sign-in; the exporter alone still refuses."""

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
import httpx
import pytest
import yaml

from billingwatch.fixtures import stripe_events as se
from testkit.processes import Exporter, binary, free_port, wait_until
from tests.conftest import ROOT, SECRET, running_exporter
from tests.test_proxy import caddy_env

CADDYFILE = ROOT / "proxy" / "forward-auth.Caddyfile"
TOKEN = "forward-auth-test-token"
SESSION = "session=signed-in-alice"


class AuthServer(ThreadingHTTPServer):
    checked: list[str]  # the X-Forwarded-Uri of each request Caddy asked about


class AuthService(BaseHTTPRequestHandler):
    """oauth2-proxy's /oauth2/auth contract: 202 and the user for a valid session cookie, else 401."""

    server: AuthServer

    def do_GET(self) -> None:
        self.server.checked.append(self.headers.get("X-Forwarded-Uri", ""))
        if self.path == "/oauth2/auth" and self.headers.get("Cookie") == SESSION:
            self.send_response(202)
            self.send_header("X-Auth-Request-User", "alice")
        else:
            self.send_response(401)
            self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def auth_service() -> Iterator[AuthServer]:
    server = AuthServer(("127.0.0.1", 0), AuthService)
    server.checked = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    config = tmp_path_factory.mktemp("web") / "web-config.yml"
    config.write_text(yaml.safe_dump({"basic_auth_users": {
        "admin": bcrypt.hashpw(b"local admin password", bcrypt.gensalt(rounds=4)).decode()}}))
    with running_exporter(BILLINGWATCH_WEB_CONFIG_FILE=str(config), BILLINGWATCH_API_TOKEN=TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def caddy(exporter: Exporter, auth_service: AuthServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("caddy")
    port = free_port()
    env = caddy_env(home, BILLINGWATCH_PUBLIC_ADDRESS=f"http://127.0.0.1:{port}",
                    BILLINGWATCH_UPSTREAM=f"127.0.0.1:{exporter.port}",
                    BILLINGWATCH_AUTH_UPSTREAM=f"127.0.0.1:{auth_service.server_address[1]}",
                    BILLINGWATCH_API_TOKEN=TOKEN)
    process = subprocess.Popen([binary("caddy"), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                               env=env, stdout=subprocess.DEVNULL, stderr=(home / "caddy.log").open("wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(url + "/health").status_code > 0, what="caddy")
        yield url
    finally:
        process.terminate()
        process.wait(15)


def test_the_token_is_not_in_caddys_adapted_config(tmp_path: Path) -> None:
    env = caddy_env(tmp_path, BILLINGWATCH_UPSTREAM="exporter:9786", BILLINGWATCH_AUTH_UPSTREAM="auth:4180",
                    BILLINGWATCH_API_TOKEN=TOKEN)
    adapted = subprocess.run([binary("caddy"), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert adapted.returncode == 0, adapted.stderr
    assert TOKEN not in adapted.stdout and "{env.BILLINGWATCH_API_TOKEN}" in adapted.stdout


@pytest.mark.parametrize("path", ["/", "/metrics", "/api/anomalies", "/events"])
def test_signed_in_through_the_auth_service_only(caddy: str, exporter: Exporter, auth_service: AuthServer,
                                                 path: str) -> None:
    denied = httpx.get(caddy + path)
    assert denied.status_code == 401 and "billingwatch_" not in denied.text and "error" not in denied.text
    assert httpx.get(caddy + path, headers={"Cookie": "session=forged"}).status_code == 401
    allowed = httpx.get(caddy + path, headers={"Cookie": SESSION})
    assert allowed.status_code == 200
    # The browser's own Authorization header is replaced by Caddy's, so it cannot matter.
    assert httpx.get(caddy + path, headers={"Cookie": SESSION, "Authorization": "Bearer wrong"}).status_code == 200
    assert auth_service.checked[-1] == path
    # Bypassing Caddy (even from loopback, even with the header an auth proxy would add) gets nothing.
    assert httpx.get(exporter.url + path, headers={"X-Auth-Request-User": "alice"}).status_code == 401


def test_stripe_webhook_passes_without_sign_in_and_cannot_replay(caddy: str, auth_service: AuthServer) -> None:
    payload = se.body(se.event("charge.succeeded", se.charge()))
    checks = len(auth_service.checked)
    delivered = httpx.post(caddy + "/webhooks/stripe", content=payload, headers=se.signed_headers(payload, SECRET))
    assert delivered.status_code == 200 and delivered.json()["received"] is True
    assert len(auth_service.checked) == checks  # the auth service was not asked
    replay = httpx.post(caddy + "/webhooks/stripe", content=payload,
                        headers={**se.signed_headers(payload, SECRET), "BillingWatch-Replay": "1",
                                 "Cookie": SESSION, "Authorization": f"Bearer {TOKEN}"})
    assert replay.status_code == 403  # Caddy strips credentials on the webhook path
