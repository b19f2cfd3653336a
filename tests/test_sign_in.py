"""BILLINGWATCH_WEB_CONFIG_FILE (issue 24, "Sign-in the Prometheus way"): a real `billingwatch
serve` with an exporter-toolkit web configuration file: Basic sign-in on every route but the
webhook and the probes, the bearer token for scripts, a real Prometheus scraping with
basic_auth, HTTPS with a self-signed certificate, and one-line start-up errors."""

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
import yaml

from billingwatch.fixtures import stripe_events as se
from billingwatch.http.sign_in import CACHE_SECONDS, Verifier
from billingwatch.http.web_config import load as load_web_config
from testkit.processes import Exporter, binary, free_port, wait_until
from testkit.stack import prometheus
from tests.conftest import ROOT, SECRET, running_exporter

USER, PASSWORD, TOKEN = "alice", "correct horse battery staple", "script-token-for-tests"
# Everything but the webhook and the probes: pages, API, metrics, docs.
GUARDED = ("/", "/metrics", "/api/detectors", "/api/anomalies", "/api/events", "/events", "/openapi.json", "/docs")


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()  # the lowest cost: a fast test


def write_web_config(directory: Path, document: dict[str, object]) -> Path:
    path = directory / "web-config.yml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def signed_in_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    config = write_web_config(tmp_path_factory.mktemp("web"), {"basic_auth_users": {USER: hashed(PASSWORD)}})
    with running_exporter(BILLINGWATCH_WEB_CONFIG_FILE=str(config), BILLINGWATCH_API_TOKEN=TOKEN) as exporter:
        yield exporter


@pytest.mark.parametrize("path", GUARDED)
def test_every_page_asks_for_basic_sign_in_and_opens_with_it(signed_in_exporter: Exporter, path: str) -> None:
    url = signed_in_exporter.url + path
    refused = httpx.get(url)  # from loopback: the exemption ends with the web configuration
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith('Basic realm="BillingWatch"')
    assert list(refused.json()) == ["error"] and "cus_" not in refused.text
    assert httpx.get(url, auth=(USER, "wrong password")).status_code == 401
    assert httpx.get(url, auth=("mallory", PASSWORD)).status_code == 401
    assert httpx.get(url, auth=(USER, PASSWORD)).status_code == 200
    # Scripts keep the bearer token.
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(url, headers={"Authorization": "Bearer not-the-token"}).status_code == 401


def test_webhook_and_probes_need_no_sign_in(signed_in_exporter: Exporter) -> None:
    for probe in ("/health", "/ready"):
        assert httpx.get(signed_in_exporter.url + probe).status_code == 200
    payload = se.body(se.event("charge.succeeded", se.charge()))
    delivered = httpx.post(signed_in_exporter.url + "/webhooks/stripe", content=payload,
                           headers=se.signed_headers(payload, SECRET))
    assert delivered.status_code == 200 and delivered.json()["received"] is True
    event_id = json.loads(payload)["id"]
    events = httpx.get(signed_in_exporter.url + "/api/events", auth=(USER, PASSWORD)).json()["events"]
    assert [line["id"] for line in events if line["id"] == event_id] == [event_id]


def test_replay_header_needs_sign_in_even_from_loopback(signed_in_exporter: Exporter) -> None:
    payload = se.body(se.event("charge.succeeded", se.charge()))
    headers = {**se.signed_headers(payload, SECRET), "BillingWatch-Replay": "1"}
    url = signed_in_exporter.url + "/webhooks/stripe"
    assert httpx.post(url, content=payload, headers=headers).status_code == 403
    assert httpx.post(url, content=payload, headers=headers, auth=(USER, PASSWORD)).status_code == 200


def test_prometheus_scrapes_with_basic_auth(signed_in_exporter: Exporter, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    target = f"127.0.0.1:{signed_in_exporter.port}"
    with prometheus(tmp_path / "prom", [target],
                    scrape={"basic_auth": {"username": USER, "password_file": str(password_file)}}) as prom:
        up = prom.wait_for('up{job="billingwatch"} == 1')
        assert up[0]["metric"]["instance"] == target
        assert prom.wait_for('billingwatch_build_info{job="billingwatch"}')


def test_verified_credentials_are_cached_briefly() -> None:
    """A browser or Prometheus sends the credential with every request: bcrypt runs once a minute, not each time."""
    users = {USER: hashed(PASSWORD).encode()}
    now = [1000.0]
    verifier = Verifier(users, clock=lambda: now[0])

    async def check() -> list[bool]:
        first = await verifier.verify(USER, PASSWORD)
        users.clear()  # a cached success no longer reads the hash ...
        cached = await verifier.verify(USER, PASSWORD)
        wrong = await verifier.verify(USER, PASSWORD + "x")
        now[0] += CACHE_SECONDS + 1  # ... until it expires
        expired = await verifier.verify(USER, PASSWORD)
        return [first, cached, wrong, expired]

    assert asyncio.run(check()) == [True, True, False, False]


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([binary("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def serve_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    env.update({"STRIPE_WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(ROOT), **values})
    return env


def test_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    # Relative paths are relative to the file, as exporter-toolkit reads them.
    config = write_web_config(tmp_path, {"tls_server_config": {"cert_file": "cert.pem", "key_file": "key.pem"},
                                         "basic_auth_users": {USER: hashed(PASSWORD)}})
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "billingwatch", "serve", "--port", str(port)],
                               env=serve_env(BILLINGWATCH_WEB_CONFIG_FILE=str(config)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        wait_until(lambda: httpx.get(url + "/health", verify=trust, timeout=1).status_code == 200,
                   what="billingwatch serve over HTTPS")
        assert httpx.get(url + "/metrics", verify=trust).status_code == 401
        metrics = httpx.get(url + "/metrics", verify=trust, auth=(USER, PASSWORD))
        assert metrics.status_code == 200 and "billingwatch_build_info" in metrics.text
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not spoken on the port
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        with pytest.raises(httpx.ConnectError):  # and the certificate is the one in the file
            httpx.get(url + "/health", timeout=5)
    finally:
        process.terminate()
        process.wait(15)


def start_up_error(env: dict[str, str], *command: str) -> str:
    """The exporter refuses to start: a non-zero exit and one line on stderr, no traceback."""
    done = subprocess.run(command or [sys.executable, "-m", "billingwatch", "serve", "--port", str(free_port())],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


BAD_CONFIGS: dict[str, tuple[object, str]] = {
    "plaintext_password": ({"basic_auth_users": {USER: PASSWORD}}, "not a bcrypt hash"),
    "unknown_top_level": ({"basic_auth_users": {USER: "x"}, "rate_limit": {"interval": "1s"}}, "rate_limit"),
    "client_certificates": ({"tls_server_config": {"cert_file": "c", "key_file": "k",
                                                   "client_auth_type": "RequireAndVerifyClientCert"}},
                            "tls_server_config.client_auth_type is not supported"),
    "response_headers": ({"http_server_config": {"headers": {"X-Frame-Options": "deny"}}},
                         "http_server_config.headers is not supported"),
    "missing_key_file": ({"tls_server_config": {"cert_file": "web-config.yml"}}, "tls_server_config.key_file"),
    "missing_cert": ({"tls_server_config": {"cert_file": "absent.pem", "key_file": "absent.pem"}}, "cannot read"),
    "colon_in_user": ({"basic_auth_users": {"a:b": "$2b$04$" + "a" * 53}}, "without ':'"),
    "not_a_mapping": (["basic_auth_users"], "must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_web_config_is_a_one_line_start_up_error(tmp_path: Path, case: str) -> None:
    document, reason = BAD_CONFIGS[case]
    path = tmp_path / "web-config.yml"
    path.write_text(yaml.safe_dump(document))
    line = start_up_error(serve_env(BILLINGWATCH_WEB_CONFIG_FILE=str(path)))
    assert "BILLINGWATCH_WEB_CONFIG_FILE" in line and reason in line
    assert PASSWORD not in line


def test_unreadable_or_invalid_yaml_is_a_one_line_start_up_error(tmp_path: Path) -> None:
    line = start_up_error(serve_env(BILLINGWATCH_WEB_CONFIG_FILE=str(tmp_path / "absent.yml")))
    assert "cannot read" in line
    broken = tmp_path / "broken.yml"
    broken.write_text("basic_auth_users: [\n")
    assert "not valid YAML" in start_up_error(serve_env(BILLINGWATCH_WEB_CONFIG_FILE=str(broken)))


def test_uvicorn_without_tls_refuses_a_file_that_asks_for_https(tmp_path: Path) -> None:
    """Started as `uvicorn --factory billingwatch.server:app` without --ssl-*: no silent plain HTTP."""
    self_signed(tmp_path)
    config = write_web_config(tmp_path, {"tls_server_config": {"cert_file": "cert.pem", "key_file": "key.pem"}})
    line = start_up_error(serve_env(BILLINGWATCH_WEB_CONFIG_FILE=str(config)), sys.executable, "-m", "uvicorn",
                          "--factory", "billingwatch.server:app", "--port", str(free_port()), "--log-level", "error")
    assert "tls_server_config" in line and "plain HTTP" in line


def test_http2_preference_is_accepted_with_a_warning(tmp_path: Path) -> None:
    config = write_web_config(tmp_path, {"http_server_config": {"http2": True},
                                         "basic_auth_users": {USER: hashed(PASSWORD)}})
    with running_exporter(BILLINGWATCH_WEB_CONFIG_FILE=str(config)) as exporter:
        assert httpx.get(exporter.url + "/metrics", auth=(USER, PASSWORD)).status_code == 200
        process = exporter.process
        assert process is not None and process.stderr is not None
        exporter.stop()
        assert "http_server_config.http2 is ignored" in process.stderr.read().decode()


def test_web_config_command_writes_a_file_the_exporter_accepts(tmp_path: Path) -> None:
    env = serve_env(BILLINGWATCH_WEB_PASSWORD=PASSWORD)
    made = subprocess.run([sys.executable, "-m", "billingwatch", "web-config", "--user", "bob"], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert PASSWORD not in made.stdout
    path = tmp_path / "web-config.yml"
    path.write_text(made.stdout)
    config = load_web_config(str(path))
    assert list(config.users) == ["bob"] and not config.tls
    assert bcrypt.checkpw(PASSWORD.encode(), config.users["bob"])
    assert config.users["bob"].startswith(b"$2b$10$")  # exporter-toolkit's documented cost


@pytest.mark.parametrize(("password", "reason"), [("", "BILLINGWATCH_WEB_PASSWORD_FILE"),
                                                  ("short", "at least 12 characters"),
                                                  ("x" * 73, "72 bytes")])
def test_web_config_command_refuses_a_weak_or_missing_password(password: str, reason: str) -> None:
    line = start_up_error(serve_env(BILLINGWATCH_WEB_PASSWORD=password), sys.executable, "-m", "billingwatch",
                          "web-config")
    assert reason in line
