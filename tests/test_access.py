"""Who may read customer data and mark history (issue 11, items 4 and 15): the bearer token when
one is set, else a direct loopback request without proxy headers; and the Host allowlist."""

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from billingwatch.config import ConfigError, from_env
from billingwatch.fixtures import stripe_events as se
from billingwatch.http.access import PROXY_HEADERS, default_hosts
from tests.conftest import SECRET, running_exporter
from tests.metrics import scrape, value, value_or_none
from tests.replay_helpers import billingwatch, write_jsonl
from tests.test_webhook_http import URL, post

Client = Callable[..., TestClient]
REMOTE = "203.0.113.7"  # TEST-NET-3: any peer that is not this machine
TOKEN = "t0ken-for-tests-only"


def with_duplicate_charge(client: TestClient) -> None:
    now = int(time.time())
    for _ in range(2):
        response = post(client, se.event("charge.succeeded", se.charge(customer="cus_private"), created=now))
        assert response.status_code == 200


@pytest.mark.parametrize("path", ["/api/anomalies", "/api/detectors"])
def test_api_refused_to_a_remote_peer_when_no_token_is_set(make_client: Client, path: str) -> None:
    client = make_client(peer=REMOTE)
    with_duplicate_charge(client)
    response = client.get(path)
    assert response.status_code == 401
    assert "BILLINGWATCH_API_TOKEN" in response.json()["error"] and "cus_private" not in response.text
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", PROXY_HEADERS)
def test_loopback_request_relayed_by_a_proxy_is_refused(make_client: Client, header: str) -> None:
    client = make_client()
    with_duplicate_charge(client)
    assert client.get("/api/anomalies").status_code == 200  # a direct local operator
    response = client.get("/api/anomalies", headers={header: "198.51.100.1"})
    assert response.status_code == 401 and "cus_private" not in response.text


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"])
def test_direct_loopback_peers_are_served(make_client: Client, peer: str) -> None:
    client = make_client(peer=peer)
    with_duplicate_charge(client)
    (record,) = client.get("/api/anomalies").json()["anomalies"]
    assert record["customer"] == "cus_private"


def test_token_when_set_is_required_even_from_loopback(make_client: Client) -> None:
    local = make_client(api_token=TOKEN)
    assert local.get("/api/anomalies").status_code == 401
    remote = make_client(peer=REMOTE, api_token=TOKEN)
    with_duplicate_charge(remote)
    for wrong in ("Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer "):
        assert remote.get("/api/anomalies", headers={"Authorization": wrong}).status_code == 401, wrong
    for right in (f"Bearer {TOKEN}", f"bearer {TOKEN}"):
        response = remote.get("/api/anomalies", headers={"Authorization": right, "X-Forwarded-For": "198.51.100.1"})
        assert response.status_code == 200 and response.json()["anomalies"][0]["customer"] == "cus_private"


@pytest.mark.parametrize("path", ["/api/anomalies", "/metrics", "/", URL])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:9786", "localhost.evil.example", "localhost:x",
                                  "127.0.0.1.nip.io", "[::2]"])
def test_dns_rebinding_host_is_refused_with_no_data(make_client: Client, path: str, host: str) -> None:
    client = make_client()
    with_duplicate_charge(client)
    response = client.request("POST" if path == URL else "GET", path, headers={"Host": host})
    assert response.status_code == 400
    assert "BILLINGWATCH_ALLOWED_HOSTS" in response.json()["error"]
    assert "cus_private" not in response.text and "billingwatch_" not in response.text


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:9786", "127.0.0.1:1", "[::1]", "[::1]:9786"])
def test_loopback_names_are_allowed_by_default(make_client: Client, host: str) -> None:
    assert make_client().get("/health", headers={"Host": host}).status_code == 200


def test_configured_hosts_replace_the_default(make_client: Client) -> None:
    client = make_client(allowed_hosts=("exporter", "*.svc.example"))
    assert client.get("/metrics", headers={"Host": "exporter:9786"}).status_code == 200
    assert client.get("/metrics", headers={"Host": "billingwatch.svc.example"}).status_code == 200
    assert client.get("/metrics", headers={"Host": "svc.example.evil"}).status_code == 400
    assert client.get("/metrics", headers={"Host": "localhost"}).status_code == 400


def test_allowed_hosts_setting_is_parsed_and_checked() -> None:
    env = {"BILLINGWATCH_ALLOWED_HOSTS": " Exporter , ::1,[::1], 10.0.0.5 ,*.svc.example"}
    assert from_env(env).allowed_hosts == ("exporter", "[::1]", "[::1]", "10.0.0.5", "*.svc.example")
    for bad in ("exporter:9786", "ex*ample", "*example.com"):
        with pytest.raises(ConfigError, match="BILLINGWATCH_ALLOWED_HOSTS"):
            from_env({"BILLINGWATCH_ALLOWED_HOSTS": bad})


def test_default_hosts_follow_the_bind_address() -> None:
    assert default_hosts("127.0.0.1") == ("localhost", "127.0.0.1", "[::1]")
    assert default_hosts("10.1.2.3") == ("localhost", "127.0.0.1", "[::1]", "10.1.2.3")
    assert default_hosts("fd00::5") == ("localhost", "127.0.0.1", "[::1]", "[fd00::5]")
    # A wildcard bind (the container image): the loopback names and this machine's own name.
    assert default_hosts("0.0.0.0") == ("localhost", "127.0.0.1", "[::1]", socket.gethostname().lower())


# --- item 15: the replay header needs the same proof ---------------------------------------

def history_figures(client: TestClient) -> dict[str, float | None]:
    """Live and history counts of a usd charge, lag samples, last received time (None: no such series yet)."""
    samples = scrape(client)
    return {
        "charges": value_or_none(samples, "billingwatch_charges_total", status="succeeded", currency="usd",
                                 livemode="false"),
        "history": value(samples, "billingwatch_history_events_total", type="charge.succeeded", livemode="false"),
        "lag_samples": value(samples, "billingwatch_webhook_delivery_lag_seconds_count", livemode="false"),
        "last_received": value_or_none(samples, "billingwatch_last_event_received_timestamp_seconds",
                                       livemode="false"),
    }


def replay_headers(payload: bytes, **extra: str) -> dict[str, str]:
    return {**se.signed_headers(payload, SECRET), "BillingWatch-Replay": "1", **extra}


@pytest.mark.parametrize(("peer", "extra"), [(REMOTE, {}), ("127.0.0.1", {"X-Forwarded-For": "198.51.100.1"}),
                                             ("127.0.0.1", {"Forwarded": "for=198.51.100.1"})])
def test_captured_delivery_reposted_as_replay_is_refused_and_changes_nothing(
    make_client: Client, peer: str, extra: dict[str, str]
) -> None:
    client = make_client(peer=peer)
    requests = scrape(client)
    assert value(requests, "billingwatch_webhook_requests_total", result="replay_unauthorized") == 0  # exists at 0
    payload = se.body(se.event("charge.succeeded", se.charge()))
    before = scrape(client)
    response = client.post(URL, content=payload, headers=replay_headers(payload, **extra))
    assert response.status_code == 403 and "BillingWatch-Replay" in response.json()["error"]
    after = scrape(client)
    counter = ("billingwatch_webhook_requests_total",
               frozenset({("result", "replay_unauthorized"), ("account", "default")}))
    assert after.pop(counter) == 1 and before.pop(counter) == 0
    assert after == before
    # Stripe's own delivery of the same body is then live: lag sample and last-received time.
    assert client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET)).status_code == 200
    figures = history_figures(client)
    assert figures["charges"] == 1 and figures["history"] == 0
    assert figures["lag_samples"] == 1 and (figures["last_received"] or 0) > 0


def test_replay_with_the_token_is_recorded_as_history(make_client: Client) -> None:
    client = make_client(peer=REMOTE, api_token=TOKEN)
    payload = se.body(se.event("charge.succeeded", se.charge()))
    local = make_client(api_token=TOKEN)  # with a token set, loopback alone is not enough
    assert local.post(URL, content=payload, headers=replay_headers(payload)).status_code == 403
    response = client.post(URL, content=payload, headers=replay_headers(payload, Authorization=f"Bearer {TOKEN}"))
    assert response.status_code == 200, response.text
    assert history_figures(client) == {"charges": None, "history": 1, "lag_samples": 0, "last_received": None}


def test_replay_command_sends_the_api_token(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = [se.event("charge.succeeded", se.charge()) for _ in range(2)]
    path = write_jsonl(tmp_path / "events.jsonl", events)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with running_exporter(BILLINGWATCH_API_TOKEN=TOKEN) as exporter:
        refused = billingwatch("replay", str(path), "--url", exporter.url)
        # Replay goes through POST /api/import: one chunk, refused whole, nothing recorded.
        assert refused.returncode != 0 and "2 rejected" in refused.stdout and "401" in refused.stderr
        done = billingwatch("replay", str(path), "--url", exporter.url,
                            env={"BILLINGWATCH_API_TOKEN_FILE": str(token_file)})
        assert done.returncode == 0, done.stderr
        assert "2 accepted" in done.stdout
        samples = scrape(exporter.url)
        assert value(samples, "billingwatch_import_requests_total", result="unauthorized") == 1
        assert value(samples, "billingwatch_import_requests_total", result="imported") == 1
        assert value(samples, "billingwatch_history_events_total", type="charge.succeeded", livemode="false") == 2
