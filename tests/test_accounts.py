"""Issue 28, several Stripe accounts in one exporter (BILLINGWATCH_ACCOUNTS_FILE, accounts.py):
each account its webhook, secrets, store prefix, series, alerts and pages; a cross-account
signature refused; a store written before accounts existed keeps its counts as `default`.

The in-process tests run the real app on one in-process store per account; the others run real
`billingwatch serve` processes on a real redis-server (and the release at 886d805)."""

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from billingwatch.anomaly_ref import anomaly_id
from billingwatch.config import ConfigError, Settings, from_env
from billingwatch.fixtures import stripe_events as se
from billingwatch.http.app import create_app
from billingwatch.store import MemoryStore
from testkit.processes import Exporter, RedisClusterServers, RedisServer, free_port
from tests import old_release
from tests.conftest import ROOT, SECRET, running_exporter
from tests.metrics import TIMING, in_levels_of_today, of_account, scrape, value
from tests.replay_helpers import billingwatch, write_jsonl

EU, US = "whsec_EuSecretForTests1", "whsec_UsSecretForTests2"
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}  # what the verdict form's CSRF check asks of a browser


def accounts_file(tmp_path: Path, text: str, **secrets: str) -> str:
    """The accounts file `text`, with each secret written to <tmp>/<name> first."""
    for name, secret in secrets.items():
        (tmp_path / name).write_text(secret + "\n")
    path = tmp_path / "accounts.yml"
    path.write_text(text.replace("DIR", str(tmp_path)))
    return str(path)


TWO = """accounts:
  - name: eu
    webhook_secret_files: [DIR/eu]
  - name: us
    webhook_secret_files: [DIR/us_old, DIR/us]
    test_only: true
"""


def charge_event(n: int, livemode: bool = False, customer: str = "cus_1") -> dict[str, Any]:
    created = int(time.time()) - 60
    return se.event("charge.succeeded", se.charge(customer=customer, charge_id=f"ch_{n}", amount=1200, currency="usd",
                                                  livemode=livemode, created=created),
                    event_id=f"evt_{n}", created=created, livemode=livemode)


def post(client: TestClient | str, path: str, evt: dict[str, Any], secret: str) -> httpx.Response:
    payload = se.body(evt)
    headers = se.signed_headers(payload, secret)
    if isinstance(client, str):
        return httpx.post(client + path, content=payload, headers=headers, timeout=10)
    return client.post(path, content=payload, headers=headers)


# --- the file, refused at start-up with one line ---


@pytest.mark.parametrize(("text", "says"), [
    ("accounts:\n  - name: eu\n    webhook_secret_files: [DIR/eu]\n    colour: red\n", "unknown key 'colour'"),
    ("accounts:\n  - name: eu\n    webhook_secret_files: [DIR/eu]\n  - name: eu\n    webhook_secret_files: [DIR/us]\n",
     "account eu is named twice"),
    ("accounts:\n  - name: eu\n    webhook_secret_files: [DIR/missing]\n", "cannot read"),
    ("accounts:\n  - name: eu\n    webhook_secret_files: [DIR/eu]\n  - name: us\n    webhook_secret_files: [DIR/eu2]\n",
     "accounts eu and us share a webhook secret"),
    ("accounts:\n  - name: EU\n    webhook_secret_files: [DIR/eu]\n", "name must be 1 to 32 characters"),
    ("accounts:\n  - name: eu\n    webhook_secret_files: [DIR/eu]\n    api_key_file: DIR/nokey\n", "api_key_file"),
    ("accounts: [\n", "not valid YAML"),
    ("accounts: []\n", "one or more accounts"),
])
def test_a_bad_accounts_file_is_refused_with_one_line(tmp_path: Path, text: str, says: str) -> None:
    path = accounts_file(tmp_path, text, eu=EU, eu2=EU, us=US)
    with pytest.raises(ConfigError) as refused:
        from_env({"BILLINGWATCH_ACCOUNTS_FILE": path})
    message = str(refused.value)
    assert message.startswith("BILLINGWATCH_ACCOUNTS_FILE: ") and says in message and "\n" not in message
    assert EU not in message and US not in message


def test_the_file_and_stripe_webhook_secret_together_are_refused(tmp_path: Path) -> None:
    path = accounts_file(tmp_path, TWO, eu=EU, us=US, us_old="whsec_UsOldSecret3")
    with pytest.raises(ConfigError, match="unset STRIPE_WEBHOOK_SECRET"):
        from_env({"BILLINGWATCH_ACCOUNTS_FILE": path, "STRIPE_WEBHOOK_SECRET": SECRET})


def test_the_file_names_accounts_with_their_secrets_and_prefixes(tmp_path: Path) -> None:
    path = accounts_file(tmp_path, TWO, eu=EU, us=US, us_old="whsec_UsOldSecret3")
    settings = from_env({"BILLINGWATCH_ACCOUNTS_FILE": path, "BILLINGWATCH_REDIS_PREFIX": "bw"})
    eu, us = settings.accounts
    assert (eu.name, eu.webhook_secrets, eu.test_only) == ("eu", (EU,), False)
    assert (us.name, us.webhook_secrets, us.test_only) == ("us", ("whsec_UsOldSecret3", US), True)
    assert settings.for_account(eu).redis_prefix == "bw:eu"
    assert EU not in repr(eu) and EU not in repr(settings)
    # Without the file: the one account `default`, today's secret and prefix.
    (default,) = Settings(webhook_secrets=(SECRET,), redis_prefix="bw").accounts
    assert default.name == "default" and Settings(redis_prefix="bw").for_account(default).redis_prefix == "bw"


# --- two accounts in one app ---


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, MemoryStore]]]:
    path = accounts_file(tmp_path, TWO, eu=EU, us=US, us_old="whsec_UsOldSecret3")
    settings = from_env({"BILLINGWATCH_ACCOUNTS_FILE": path, "BILLINGWATCH_DETECTOR_PLUGINS": "none"})
    stores = {"eu": MemoryStore(), "us": MemoryStore()}
    with TestClient(create_app(settings, stores=stores), base_url="http://localhost", client=("127.0.0.1", 50000)) \
            as client:
        yield client, stores


def test_each_account_counts_its_own_events_and_refuses_the_others_signature(
        two: tuple[TestClient, dict[str, MemoryStore]]) -> None:
    client, _ = two
    assert post(client, "/webhooks/stripe/eu", charge_event(1), EU).status_code == 200
    assert post(client, "/webhooks/stripe/us", charge_event(2), US).status_code == 200
    assert post(client, "/webhooks/stripe/us", charge_event(3), "whsec_UsOldSecret3").status_code == 200  # rotation
    # eu's event posted to us's endpoint: refused, counted apart from a forgery, nothing recorded.
    crossed = post(client, "/webhooks/stripe/us", charge_event(4), EU)
    assert crossed.status_code == 400 and "another account" in crossed.json()["error"]
    forged = post(client, "/webhooks/stripe/us", charge_event(5), "whsec_NobodysSecret4")
    assert forged.status_code == 400
    assert client.post("/webhooks/stripe/asia", content=b"{}").status_code == 404
    assert client.post("/webhooks/stripe", content=b"{}").status_code == 404  # no account named default
    samples = scrape(client)
    events = "billingwatch_events_total"
    assert value(samples, events, account="eu", type="charge.succeeded", livemode="false") == 1
    assert value(samples, events, account="us", type="charge.succeeded", livemode="false") == 2
    requests = "billingwatch_webhook_requests_total"
    assert value(samples, requests, account="us", result="wrong_account") == 1
    assert value(samples, requests, account="us", result="invalid_signature") == 1
    assert value(samples, requests, account="eu", result="wrong_account") == 0
    # Every series exists in each account, at 0 before its first event.
    for account in ("eu", "us"):
        assert value(samples, events, account=account, type="invoice.paid", livemode="true") == 0
        assert value(samples, "billingwatch_store_up", account=account) == 1
    assert {dict(labels).get("account") for name, labels in samples if name != "billingwatch_build_info"
            and not name.startswith("billingwatch_alert_notifications")} == {"eu", "us"}
    assert [line["id"] for line in client.get("/api/events?account=eu").json()["events"]] == ["evt_1"]


def test_a_test_only_account_refuses_livemode_events(two: tuple[TestClient, dict[str, MemoryStore]]) -> None:
    client, _ = two
    refused = post(client, "/webhooks/stripe/us", charge_event(6, livemode=True), US)
    assert refused.status_code == 400 and "test_only" in refused.json()["error"]
    assert post(client, "/webhooks/stripe/eu", charge_event(7, livemode=True), EU).status_code == 200


def test_pages_and_the_api_filter_by_account_and_connected_account(
        two: tuple[TestClient, dict[str, MemoryStore]]) -> None:
    client, _ = two
    for n, account in ((1, "eu"), (2, "eu")):  # the same card twice on eu: a duplicate_charge there
        assert post(client, f"/webhooks/stripe/{account}", charge_event(n), EU).status_code == 200
    connected = charge_event(3, customer="cus_2")
    connected["account"] = "acct_123"
    assert post(client, "/webhooks/stripe/us", connected, US).status_code == 200
    everything = client.get("/api/events").json()["events"]
    assert sorted((line["id"], line["account_name"]) for line in everything) == \
        [("evt_1", "eu"), ("evt_2", "eu"), ("evt_3", "us")]
    assert [line["id"] for line in client.get("/api/events?account=us").json()["events"]] == ["evt_3"]
    assert [line["id"] for line in client.get("/api/events?connected_account=acct_123").json()["events"]] == ["evt_3"]
    assert client.get("/api/events?connected_account=acct_999").json()["events"] == []
    (anomaly,) = client.get("/api/anomalies").json()["anomalies"]
    assert (anomaly["detector"], anomaly["account_name"]) == ("duplicate_charge", "eu")
    assert client.get("/api/anomalies?account=us").json()["anomalies"] == []
    csv = client.get("/api/events?account=eu&format=csv").text
    assert "evt_1" in csv and "evt_3" not in csv
    unknown = client.get("/api/events?account=asia")
    assert unknown.status_code == 400 and unknown.json() == {"error": "unknown account 'asia'; configured: eu, us"}
    assert "evt_3" not in client.get("/events?account=eu").text and "evt_3" in client.get("/events").text
    page = client.get("/events").text  # each line names its account and connected account, as filter links
    assert 'href="/events?account=us"' in page and 'href="/events?connected_account=acct_123"' in page
    home = client.get("/").text
    assert "2 accounts (BILLINGWATCH_ACCOUNTS_FILE): eu, us (test only)" in home
    assert "repeats an earlier charge" not in client.get("/anomalies?account=us").text
    assert "repeats an earlier charge" in client.get("/anomalies?account=eu").text
    # A verdict on eu's anomaly is stored and counted in eu's store, whichever page it was given on.
    answer = client.post(f"/anomalies/{anomaly_id(anomaly)}/feedback", data={"verdict": "expected"},
                         headers=SAME_ORIGIN, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    samples = scrape(client)
    for account, counted in (("eu", 1), ("us", 0)):
        assert value(samples, "billingwatch_anomaly_feedback_total", account=account, detector="duplicate_charge",
                     verdict="expected") == counted
    anomalies = "billingwatch_anomalies_total"
    assert value(samples, anomalies, account="eu", detector="duplicate_charge", severity="critical", priority="P1",
                 livemode="false") == 1
    assert value(samples, anomalies, account="us", detector="duplicate_charge", severity="critical", priority="P1",
                 livemode="false") == 0


# --- real processes on a real Redis ---


def serve(env: dict[str, str]) -> Exporter:
    exporter = Exporter({**env, "PYTHONPATH": str(ROOT)}, free_port())
    exporter.start()
    return exporter


def base_env(redis_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    return {**env, "REDIS_URL": redis_url, "BILLINGWATCH_REDIS_PREFIX": prefix}


def test_two_accounts_in_one_exporter_on_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    prefix = "t" + uuid.uuid4().hex[:12]
    path = accounts_file(tmp_path, TWO, eu=EU, us=US, us_old="whsec_UsOldSecret3")
    exporter = serve({**base_env(redis_server.url, prefix), "BILLINGWATCH_ACCOUNTS_FILE": path})
    try:
        assert post(exporter.url, "/webhooks/stripe/eu", charge_event(1), EU).status_code == 200
        assert post(exporter.url, "/webhooks/stripe/eu", charge_event(2), EU).status_code == 200  # duplicate_charge
        assert post(exporter.url, "/webhooks/stripe/us", charge_event(1), US).status_code == 200  # same id, own dedup
        assert post(exporter.url, "/webhooks/stripe/us", charge_event(1), US).json()["duplicate"] is True
        assert post(exporter.url, "/webhooks/stripe/eu", charge_event(3), US).status_code == 400
        samples = scrape(exporter.url)
        events = "billingwatch_events_total"
        assert value(samples, events, account="eu", type="charge.succeeded", livemode="false") == 2
        assert value(samples, events, account="us", type="charge.succeeded", livemode="false") == 1
        assert value(samples, "billingwatch_webhook_requests_total", account="eu", result="wrong_account") == 1
        assert value(samples, "billingwatch_anomalies_total", account="eu", detector="duplicate_charge",
                     severity="critical", priority="P1", livemode="false") == 1
        assert value(samples, "billingwatch_anomalies_total", account="us", detector="duplicate_charge",
                     severity="critical", priority="P1", livemode="false") == 0
        assert "repeats an earlier charge" in httpx.get(exporter.url + "/anomalies?account=eu", timeout=10).text
        assert "repeats an earlier charge" not in httpx.get(exporter.url + "/anomalies?account=us", timeout=10).text
        assert httpx.get(exporter.url + "/ready", timeout=10).json()["status"] == "ready"
        # replay --account: over HTTP to that account's endpoint with its secret, or straight into its store.
        env = {"BILLINGWATCH_ACCOUNTS_FILE": path, "STRIPE_WEBHOOK_SECRET": "", "REDIS_URL": redis_server.url,
               "BILLINGWATCH_REDIS_PREFIX": prefix}
        us_file = write_jsonl(tmp_path / "us.jsonl", [charge_event(10, customer="cus_9")])
        over_http = billingwatch("replay", str(us_file), "--url", exporter.url, "--account", "us", env=env)
        assert over_http.returncode == 0 and "1 accepted" in over_http.stdout, over_http.stderr
        direct = billingwatch("replay", "--direct", "--account", "eu",
                              str(write_jsonl(tmp_path / "eu.jsonl", [charge_event(11, customer="cus_8")])), env=env)
        assert direct.returncode == 0 and "1 accepted" in direct.stdout, direct.stderr
        unnamed = billingwatch("replay", "--direct", str(tmp_path / "eu.jsonl"), env=env)
        assert unnamed.returncode != 0 and "choose one with --account" in unnamed.stderr
        history = scrape(exporter.url)
        for account in ("eu", "us"):
            assert value(history, "billingwatch_history_events_total", account=account, type="charge.succeeded",
                         livemode="false") == 1
    finally:
        exporter.stop()
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    try:  # each account under its own hash tag; nothing under the base prefix (no account named default)
        assert client.exists(f"{{{prefix}:eu}}:counters") and client.exists(f"{{{prefix}:us}}:counters")
        assert not list(client.scan_iter(f"{{{prefix}}}:*"))
    finally:
        client.close()


def test_a_store_written_by_886d805_keeps_its_counts_as_the_default_account(
        redis_server: RedisServer, tmp_path: Path) -> None:
    prefix = "t" + uuid.uuid4().hex[:12]
    (tmp_path / "release").mkdir()
    python = old_release.install(old_release.PREVIOUS, tmp_path / "release")
    old = old_release.ReleaseExporter(python, {**base_env(redis_server.url, prefix), "STRIPE_WEBHOOK_SECRET": SECRET},
                                      free_port())
    old.start()
    try:
        events = [charge_event(n, customer=f"cus_{n}") for n in range(5)]
        for evt in events:
            assert post(old.url, "/webhooks/stripe", evt, SECRET).status_code == 200
        before = in_levels_of_today({k: v for k, v in scrape(old.url).items() if not k[0].startswith(TIMING)})
    finally:
        old.stop()
    (tmp_path / "conf").mkdir()
    path = accounts_file(tmp_path / "conf", """accounts:
  - name: default
    webhook_secret_files: [DIR/default]
  - name: eu
    webhook_secret_files: [DIR/eu]
""", default=SECRET, eu=EU)
    new = serve({**base_env(redis_server.url, prefix), "BILLINGWATCH_ACCOUNTS_FILE": path})
    try:
        samples = scrape(new.url)
        now = of_account(samples, "default")
        assert {k: now.get(k) for k in before} == before  # every count kept, under account="default"
        assert value(samples, "billingwatch_events_total", account="default", type="charge.succeeded",
                     livemode="false") == 5
        assert value(samples, "billingwatch_events_total", account="eu", type="charge.succeeded",
                     livemode="false") == 0
        # Dedup kept: a redelivery on today's path (the default account's) is a duplicate.
        assert post(new.url, "/webhooks/stripe", events[0], SECRET).json()["duplicate"] is True
        assert post(new.url, "/webhooks/stripe/default", events[1], SECRET).json()["duplicate"] is True
    finally:
        new.stop()


def test_two_accounts_on_a_redis_cluster(tmp_path: Path, redis_prefix: str) -> None:
    """Each account's hash tag ({prefix} and {prefix:eu}) keeps its keys in one slot: events of
    both record through one exporter however the slots are spread over the masters."""
    path = accounts_file(tmp_path, """accounts:
  - name: default
    webhook_secret_files: [DIR/default]
  - name: eu
    webhook_secret_files: [DIR/eu]
""", default=SECRET, eu=EU)
    with RedisClusterServers(masters=3) as cluster, running_exporter(
            REDIS_URL=cluster.url(cluster.ports[0]), BILLINGWATCH_REDIS_PREFIX=redis_prefix,
            BILLINGWATCH_ACCOUNTS_FILE=path, STRIPE_WEBHOOK_SECRET="") as exporter:
        for n in range(3):
            assert post(exporter.url, "/webhooks/stripe", charge_event(n, customer=f"cus_{n}"), SECRET).status_code \
                == 200
            assert post(exporter.url, "/webhooks/stripe/eu", charge_event(n, customer=f"cus_{n}"), EU).status_code \
                == 200
        assert post(exporter.url, "/webhooks/stripe/eu", charge_event(3, customer="cus_3"), EU).status_code == 200
        samples = scrape(exporter.url)
        for account, counted in (("default", 3), ("eu", 4)):
            assert value(samples, "billingwatch_events_total", account=account, type="charge.succeeded",
                         livemode="false") == counted
        assert httpx.get(exporter.url + "/ready", timeout=10).json()["status"] == "ready"
