"""The HTTP surface: signed ingestion, every bad input, 503 when the store is down, the JSON API."""

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from billingwatch.fixtures import stripe_events as se
from billingwatch.store import MemoryStore, RedisStore, Store
from testkit.processes import free_port
from tests.conftest import SECRET
from tests.metrics import scrape, store_figures, value, value_or_none

Client = Callable[..., TestClient]
URL = "/webhooks/stripe"


def post(client: TestClient, evt: dict[str, Any], secret: str = SECRET) -> Any:
    payload = se.body(evt)
    return client.post(URL, content=payload, headers=se.signed_headers(payload, secret))




def test_signed_event_is_recorded_and_shown_in_metrics(client: TestClient) -> None:
    response = post(client, se.event("charge.succeeded", se.charge(amount=1999, currency="eur")))
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False, "anomalies": 0}
    assert value(scrape(client), "billingwatch_charges_total", status="succeeded", currency="eur",
                 livemode="false") == 1
    assert value(scrape(client), "billingwatch_charge_amount_total", status="succeeded", currency="eur",
                 livemode="false") == pytest.approx(19.99)
    assert value(scrape(client), "billingwatch_events_total", type="charge.succeeded", livemode="false") == 1
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="accepted") == 1


def test_redelivery_answers_duplicate_and_changes_no_count(client: TestClient) -> None:
    evt = se.event("charge.succeeded", se.charge())
    assert post(client, evt).status_code == 200
    before = store_figures(scrape(client))
    again = post(client, evt)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert store_figures(scrape(client)) == before
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="duplicate") == 1


def test_duplicate_charge_pair_shows_in_metric_and_api_with_both_charge_ids(client: TestClient) -> None:
    now = int(time.time())
    post(client, se.event("charge.succeeded", se.charge(charge_id="ch_one"), created=now - 60))
    response = post(client, se.event("charge.succeeded", se.charge(charge_id="ch_two"), created=now))
    assert response.json()["anomalies"] == 1
    assert value(scrape(client), "billingwatch_anomalies_total", detector="duplicate_charge", severity="critical",
                 priority="P1", livemode="false") == 1
    (record,) = client.get("/api/anomalies", params={"detector": "duplicate_charge"}).json()["anomalies"]
    assert {record["charge"], *record["related"]} == {"ch_one", "ch_two"}
    assert record["customer"] == "cus_alice" and record["currency"] == "usd" and record["amount"] == 2000


def bad_requests() -> list[tuple[str, Callable[[], tuple[bytes, dict[str, str]]], int, str]]:
    good = se.body(se.event("charge.succeeded", se.charge()))
    old = int(time.time()) - 301
    return [
        ("missing_signature", lambda: (good, {}), 400, "missing"),
        ("invalid_signature", lambda: (good, se.signed_headers(good, "whsec_wrong")), 400, "does not match"),
        ("invalid_signature", lambda: (good, se.signed_headers(good, SECRET, timestamp=old)), 400, "too old"),
        ("invalid_signature", lambda: (good + b" ", se.signed_headers(good, SECRET)), 400, "does not match"),
        ("invalid_json", lambda: (b"{not json", se.signed_headers(b"{not json", SECRET)), 400, "not JSON"),
        ("invalid_json", lambda: (b"\xff\xfe", {"Stripe-Signature": "t=1,v1=00"}), 400, "UTF-8"),
        ("invalid_event", lambda: (b"[]", se.signed_headers(b"[]", SECRET)), 400, "JSON object"),
        ("invalid_event", lambda: (b'{"object": "charge"}', se.signed_headers(b'{"object": "charge"}', SECRET)), 400,
         "not a Stripe event"),
    ]


@pytest.mark.parametrize("case", range(len(bad_requests())))
def test_bad_input_gets_a_clear_error_a_counter_and_changes_nothing(client: TestClient, case: int) -> None:
    result, build, status, reason = bad_requests()[case]
    payload, headers = build()
    before = store_figures(scrape(client))
    response = client.post(URL, content=payload, headers=headers)
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["error"] and reason in body["error"] and "\n" not in body["error"]
    assert value(scrape(client), "billingwatch_webhook_requests_total", result=result) == 1
    assert store_figures(scrape(client)) == before


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.pop("id"), "event.id is missing"),
        (lambda e: e.update(created="yesterday"), "event.created must be an integer"),
        (lambda e: e.update(livemode="no"), "event.livemode must be a boolean"),
        (lambda e: e.update(type="Charge Succeeded!"), "event.type"),
    ],
)
def test_signed_bodies_without_an_event_envelope_are_rejected_untouched(
    client: TestClient, mutate: Callable[[dict[str, Any]], Any], reason: str
) -> None:
    evt = se.event("charge.succeeded", se.charge())
    mutate(evt)
    before = store_figures(scrape(client))
    response = post(client, evt)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert store_figures(scrape(client)) == before
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="invalid_event") == 1


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e["data"]["object"].update(amount="20.00"), "charge.amount must be an integer"),
        (lambda e: e["data"]["object"].update(amount=True), "charge.amount must be an integer"),
        (lambda e: e["data"]["object"].update(currency="dollars"), "charge.currency"),
        (lambda e: e["data"]["object"].update(amount=10**16), "out of range"),
        (lambda e: e["data"].update(object=[]), "event.data.object must be an object"),
    ],
)
def test_signed_events_we_cannot_parse_are_quarantined_and_move_nothing_else(
    client: TestClient, mutate: Callable[[dict[str, Any]], Any], reason: str
) -> None:
    """A signed event envelope is Stripe's word: kept (tests/test_quarantine.py), never refused."""
    evt = se.event("charge.succeeded", se.charge())
    mutate(evt)
    before = store_figures(scrape(client))
    response = post(client, evt)
    assert response.status_code == 200
    assert response.json()["quarantined"] is True and reason in response.json()["reason"]
    after = store_figures(scrape(client))
    assert {k: v for k, v in after.items() if "quarantine" not in k[0]} == {
        k: v for k, v in before.items() if "quarantine" not in k[0]}
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="quarantined") == 1
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="invalid_event") == 0


def test_body_over_the_limit_is_413(make_client: Client) -> None:
    client = make_client(max_body_bytes=2048)
    payload = json.dumps({"padding": "x" * 4096}).encode()
    response = client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET))
    assert response.status_code == 413
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="too_large") == 1


def test_rotated_secrets_both_accepted(make_client: Client) -> None:
    client = make_client(webhook_secrets=("whsec_old", "whsec_new"))
    assert post(client, se.event("charge.succeeded", se.charge()), "whsec_old").status_code == 200
    assert post(client, se.event("charge.succeeded", se.charge()), "whsec_new").status_code == 200
    assert post(client, se.event("charge.succeeded", se.charge()), "whsec_other").status_code == 400


def test_store_down_answers_503_never_2xx(make_client: Client) -> None:
    client = make_client(store=RedisStore(f"redis://127.0.0.1:{free_port()}/0"))
    response = post(client, se.event("charge.succeeded", se.charge()))
    assert response.status_code == 503
    assert response.json() == {"error": "store unavailable; retry later"}
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="store_unavailable") == 1
    assert value(scrape(client), "billingwatch_store_up") == 0
    assert client.get("/ready").status_code == 503
    assert client.get("/health").status_code == 200


def test_unsigned_development_mode_accepts_test_events_and_rejects_livemode(make_client: Client) -> None:
    client = make_client(webhook_secrets=(), insecure_skip_signature=True)
    evt = se.event("charge.succeeded", se.charge())
    json_type = {"Content-Type": "application/json"}
    assert client.post(URL, content=se.body(evt), headers=json_type).status_code == 200
    live = se.event("charge.succeeded", se.charge(livemode=True), livemode=True)
    response = client.post(URL, content=se.body(live), headers=json_type)
    assert response.status_code == 400 and "livemode" in response.json()["error"]
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="livemode_rejected") == 1


def test_api_requires_the_bearer_token_when_set(make_client: Client) -> None:
    client = make_client(api_token="s3cret-token")
    assert client.get("/api/anomalies").status_code == 401
    assert client.get("/api/detectors", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/api/detectors", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200
    names = {d["name"]: d for d in ok.json()["detectors"]}
    assert set(names) == {"duplicate_charge", "negative_invoice", "currency_mismatch", "double_invoice",
                          "subscription_downgrade", "large_refund"}
    assert (names["duplicate_charge"]["severity"], names["duplicate_charge"]["priority"]) == ("critical", "P1")
    assert names["duplicate_charge"]["thresholds"] == {"window_seconds": 300}
    assert names["subscription_downgrade"]["severities"] == ["critical", "warning", "info"]
    assert names["subscription_downgrade"]["priorities"] == ["P1", "P2", "P3", "P4"]
    assert names["large_refund"]["thresholds"]["single_refund"].startswith("usd=1000,eur=1000,")
    assert client.get("/metrics").status_code == 200  # scraping needs no token


def test_anomalies_api_filters_and_limits(make_client: Client) -> None:
    client = make_client()
    now = int(time.time())
    for i in range(3):
        post(client, se.event("invoice.finalized", se.invoice(total=-100 - i, billing_reason="manual"), created=now))
    post(client, se.event("charge.succeeded", se.charge(customer="cus_x"), created=now))
    post(client, se.event("charge.succeeded", se.charge(customer="cus_x"), created=now))
    everything = client.get("/api/anomalies").json()["anomalies"]
    assert [a["detector"] for a in everything] == ["duplicate_charge"] + ["negative_invoice"] * 3
    limited = client.get("/api/anomalies", params={"detector": "negative_invoice", "limit": 2}).json()
    assert [a["amount"] for a in limited["anomalies"]] == [-102, -101]
    assert client.get("/api/anomalies", params={"limit": "0"}).status_code == 400
    assert client.get("/api/anomalies", params={"detector": "nope"}).status_code == 400


def test_landing_health_ready(make_client: Client) -> None:
    client = make_client()
    page = client.get("/")
    assert page.status_code == 200 and "/metrics" in page.text and 'href="/anomalies"' in page.text
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "store": "memory"}


def test_openmetrics_when_the_scraper_asks(make_client: Client) -> None:
    client = make_client()
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_every_family_has_help_and_no_id_in_any_label(make_client: Client) -> None:
    store: Store = MemoryStore()
    client = make_client(store=store)
    now = int(time.time())
    post(client, se.event("charge.succeeded", se.charge(customer="cus_secret1", charge_id="ch_secret2"), created=now))
    post(client, se.event("charge.failed", se.charge(status="failed", reason="stolen_card"), created=now))
    post(client, se.event("customer.subscription.created", se.subscription(subscription_id="sub_secret3")))
    post(client, se.event("invoice.paid", se.invoice(invoice_id="in_secret4", subscription="sub_secret3")))
    text = client.get("/metrics").text
    label_values = set()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("billingwatch_"):
            assert family.documentation, family.name
        for sample in family.samples:
            label_values.update(sample.labels.values())
    for secret in ("cus_secret1", "ch_secret2", "sub_secret3", "in_secret4"):
        assert secret not in text
    assert not [v for v in label_values if v.startswith(("cus_", "ch_", "sub_", "in_", "evt_", "pi_"))]
    assert value(scrape(client), "billingwatch_charge_failures_total", reason="stolen_card", livemode="false") == 1


def test_replayed_history_is_state_not_webhook_delivery(client: TestClient) -> None:
    old = int(time.time()) - 20 * 86400
    payload = se.body(se.event("charge.succeeded", se.charge(), created=old))
    headers = {**se.signed_headers(payload, SECRET), "BillingWatch-Replay": "1"}
    assert client.post(URL, content=payload, headers=headers).status_code == 200
    assert value_or_none(scrape(client), "billingwatch_charges_total", status="succeeded", currency="usd",
                         livemode="false") is None  # no live charge counted
    assert value(scrape(client), "billingwatch_history_events_total", type="charge.succeeded", livemode="false") == 1
    assert value(scrape(client), "billingwatch_last_event_created_timestamp_seconds", livemode="false") == old
    # No lag sample and no last-received time: a backfill neither fires webhook_lag nor hides a silence.
    assert value(scrape(client), "billingwatch_webhook_delivery_lag_seconds_count", livemode="false") == 0
    assert value_or_none(scrape(client), "billingwatch_last_event_received_timestamp_seconds", livemode="false") is None
    live = se.body(se.event("charge.succeeded", se.charge(amount=5)))
    client.post(URL, content=live, headers=se.signed_headers(live, SECRET))
    assert value(scrape(client), "billingwatch_webhook_delivery_lag_seconds_count", livemode="false") == 1
