"""Issue 10: replayed history is state, not traffic; every first occurrence is counted.

Both stores, through the real app: history moves no counter a rule reads, and every series a
rule reads exists at 0 before its first event.
"""

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from billingwatch.config import ConfigError, from_env
from billingwatch.detectors import REGISTRY
from billingwatch.fixtures import stripe_events as se
from billingwatch.levels import alert_severity, priority
from billingwatch.metrics.labels import CHARGE_STATUSES, DECLINE_REASONS, DISPUTE_REASONS, EVENT_TYPES, FRAUD_TYPES
from billingwatch.store import RedisStore
from tests.conftest import SECRET
from tests.metrics import LIVE, live_counts, moved, scrape, total, value_or_none

Client = Callable[..., TestClient]
URL = "/webhooks/stripe"
DAY = 86400
MODES = ("true", "false")


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest, make_client: Client) -> Client:
    """make(**settings): a fresh app on the in-process store or on its own Redis prefix."""
    def build(**overrides: Any) -> TestClient:
        if request.param == "memory":
            return make_client(**overrides)
        store = RedisStore(request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix"))
        return make_client(store=store, **overrides)
    return build


def post(client: TestClient, evt: dict[str, Any], history: bool = False) -> dict[str, Any]:
    payload = se.body(evt)
    headers = se.signed_headers(payload, SECRET)
    if history:
        headers["BillingWatch-Replay"] = "1"
    response = client.post(URL, content=payload, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def history_events(now: int) -> list[dict[str, Any]]:
    """A month of history: every kind of event the ledger counts, and a duplicate charge 20 days back."""
    ev, old = se.event, now - 20 * DAY
    refund = se.refund(refund_id="re_hist", currency="eur")
    charge_refunded = se.charge(charge_id="ch_refunded", currency="eur")
    charge_refunded["refunds"] = {"object": "list", "data": [refund], "has_more": False}
    return [
        ev("charge.succeeded", se.charge(charge_id="ch_h1", customer="cus_dup"), created=old),
        ev("charge.succeeded", se.charge(charge_id="ch_h2", customer="cus_dup"), created=old + 60),
        ev("charge.failed", se.charge(status="failed", reason="stolen_card"), created=old + 100),
        ev("charge.pending", se.charge(status="pending", currency="eur"), created=old + 110),
        ev("refund.created", refund, created=old + 120),
        ev("charge.refunded", charge_refunded, created=old + 121),
        ev("charge.dispute.created", se.dispute(reason="fraudulent"), created=old + 130),
        ev("radar.early_fraud_warning.created", se.early_fraud_warning(), created=old + 140),
        ev("invoice.paid", se.invoice(invoice_id="in_hist", subscription="sub_live"), created=old + 150),
        ev("invoice.payment_failed", se.invoice(status="open", attempt_count=2), created=old + 160),
        ev("customer.subscription.created", se.subscription(subscription_id="sub_live", unit_amount=5000),
           created=old + 170),
        ev("customer.subscription.created", se.subscription(subscription_id="sub_gone"), created=old + 180),
        ev("customer.subscription.deleted", se.subscription(subscription_id="sub_gone", status="canceled"),
           created=old + 190),
        ev("customer.created", {"id": "cus_new", "object": "customer"}, created=old + 200),
    ]


def test_history_moves_no_live_counter_but_updates_state_and_lists_its_anomalies(make: Client, now: int) -> None:
    client = make()
    before = scrape(client)
    events = history_events(now)
    answers = [post(client, evt, history=True) for evt in events]
    assert sum(a["anomalies"] for a in answers) == 1  # the response still reports it
    after = scrape(client)

    assert moved(live_counts(before), live_counts(after)) == {}
    assert total(after, "billingwatch_history_events_total") == len(events)
    assert total(after, "billingwatch_history_events_total", type="other") == 1  # customer.created
    assert total(after, "billingwatch_history_events_total", type="charge.succeeded", livemode="false") == 2
    assert total(after, "billingwatch_subscriptions", status="active", livemode="false") == 1
    assert total(after, "billingwatch_mrr_amount", currency="usd", livemode="false") == 50.0
    assert total(after, "billingwatch_last_event_created_timestamp_seconds", livemode="false") == now - 20 * DAY + 200
    assert total(after, "billingwatch_history_anomalies_total", detector="duplicate_charge") == 1
    assert total(after, "billingwatch_anomalies_total") == 0

    [record] = client.get("/api/anomalies").json()["anomalies"]
    assert (record["detector"], record["history"], record["charge"]) == ("duplicate_charge", True, "ch_h2")
    assert record["event_created"] == now - 20 * DAY + 60 and record["related"] == ["ch_h1"]
    assert client.get("/api/anomalies?history=true").json()["anomalies"] == [record]
    assert client.get("/api/anomalies?history=false").json()["anomalies"] == []
    bad = client.get("/api/anomalies?history=yes")
    assert bad.status_code == 400 and bad.json() == {"error": "history must be true or false"}

    # Stripe delivering the same events live later: duplicates, nothing counted.
    assert all(post(client, evt)["duplicate"] for evt in events)
    # Other events reporting a payment history already counted: the count-once keys hold.
    post(client, se.event("refund.updated", se.refund(refund_id="re_hist", currency="eur")))
    post(client, se.event("invoice.payment_succeeded", se.invoice(invoice_id="in_hist", subscription="sub_live")))
    final = scrape(client)
    assert total(final, "billingwatch_refunds_total") == 0
    assert total(final, "billingwatch_invoices_paid_total") == 0
    assert total(final, "billingwatch_events_total") == 2  # the two new events themselves, live


def test_a_live_event_pairing_with_history_is_a_live_anomaly(make: Client, now: int) -> None:
    client = make()
    post(client, se.event("charge.succeeded", se.charge(charge_id="ch_p1", customer="cus_p"), created=now - 100),
         history=True)
    answer = post(client, se.event("charge.succeeded", se.charge(charge_id="ch_p2", customer="cus_p"),
                                   created=now - 40))
    assert answer["anomalies"] == 1
    after = scrape(client)
    assert total(after, "billingwatch_anomalies_total", detector="duplicate_charge") == 1
    assert total(after, "billingwatch_history_anomalies_total") == 0
    [record] = client.get("/api/anomalies?history=false").json()["anomalies"]
    assert (record["charge"], record["related"], record["history"]) == ("ch_p2", ["ch_p1"], False)


def test_a_history_subscription_end_is_not_counted_but_ends_it(make: Client, now: int) -> None:
    client = make()
    post(client, se.event("customer.subscription.created", se.subscription(subscription_id="sub_e"),
                          created=now - 50), history=True)
    post(client, se.event("customer.subscription.deleted", se.subscription(subscription_id="sub_e",
                          status="canceled"), created=now - 40), history=True)
    assert total(scrape(client), "billingwatch_subscriptions_ended_total") == 0
    active = value_or_none(scrape(client), "billingwatch_subscriptions", status="active", livemode="false")
    assert active in (None, 0)  # no active subscription left (the gauge shows only statuses held)
    # Live: counted once, as before.
    post(client, se.event("customer.subscription.created", se.subscription(subscription_id="sub_f"),
                          created=now - 30))
    post(client, se.event("customer.subscription.deleted", se.subscription(subscription_id="sub_f",
                          status="canceled"), created=now - 20))
    assert total(scrape(client), "billingwatch_subscriptions_ended_total", livemode="false") == 1


def expected_zeros() -> dict[str, list[dict[str, str]]]:
    """Every series of the contract that exists at 0 before any event, per livemode."""
    detectors = [{"detector": d.name, "severity": alert_severity(d.severity), "priority": priority(d.severity)}
                 for d in REGISTRY]
    types = [{"type": t} for t in (*EVENT_TYPES, "other")]
    return {
        "billingwatch_events_total": types,
        "billingwatch_history_events_total": types,
        "billingwatch_charge_outcomes_total": [{"status": s} for s in CHARGE_STATUSES],
        "billingwatch_disputes_total": [{"reason": r} for r in (*DISPUTE_REASONS, "other")],
        "billingwatch_early_fraud_warnings_total": [{"fraud_type": t} for t in (*FRAUD_TYPES, "other")],
        "billingwatch_charge_failures_total": [{"reason": r} for r in (*DECLINE_REASONS, "other")],
        "billingwatch_invoice_payment_failures_total": [{"attempt": a} for a in ("1", "2", "3", "4+")],
        "billingwatch_subscriptions_ended_total": [{}],
        "billingwatch_missed_events_total": [{}],
        "billingwatch_anomalies_total": detectors,
        "billingwatch_history_anomalies_total": detectors,
        "billingwatch_webhook_delivery_lag_seconds_bucket": [
            {"le": le} for le in ("1.0", "5.0", "15.0", "30.0", "60.0", "120.0", "300.0", "600.0", "1800.0",
                                  "3600.0", "10800.0", "86400.0", "+Inf")
        ],
        "billingwatch_webhook_delivery_lag_seconds_sum": [{}],
        "billingwatch_webhook_delivery_lag_seconds_count": [{}],
    }


def test_every_contract_series_exists_at_zero_on_a_fresh_exporter(make: Client) -> None:
    samples = scrape(make())
    for name, label_sets in expected_zeros().items():
        for labels in label_sets:
            for mode in MODES:
                key = (name, frozenset({**labels, "livemode": mode, "account": "default"}.items()))
                assert samples.get(key) == 0.0, key
    # A fresh exporter shows no currency yet: nothing to pre-expose.
    assert not [k for k in samples if dict(k[1]).get("currency")]


def test_configured_currencies_exist_at_zero_from_start(make: Client) -> None:
    samples = scrape(make(currencies=("eur", "jpy")))
    currency_counters = ("billingwatch_charges_total", "billingwatch_charge_amount_total", "billingwatch_refunds_total",
                         "billingwatch_refund_amount_total", "billingwatch_dispute_amount_total",
                         "billingwatch_invoices_paid_total", "billingwatch_invoice_paid_amount_total")
    for name in currency_counters:
        for currency in ("eur", "jpy"):
            for mode in MODES:
                found = [v for (n, ls), v in samples.items()
                         if n == name and ("currency", currency) in ls and ("livemode", mode) in ls]
                assert found and set(found) == {0.0}, (name, currency, mode)


def test_a_first_occurrence_increments_a_series_that_already_existed_at_zero(make: Client) -> None:
    client = make(currencies=("eur",))
    before = scrape(client)
    post(client, se.event("charge.dispute.created", se.dispute(reason="product_not_received", currency="eur")))
    post(client, se.event("radar.early_fraud_warning.created", se.early_fraud_warning(fraud_type="misc")))
    post(client, se.event("charge.failed", se.charge(status="failed", currency="eur", reason="expired_card")))
    post(client, se.event("charge.succeeded", se.charge(currency="eur")))
    post(client, se.event("some.new_type", {"id": "x_1", "object": "thing"}))
    changed = moved(before, scrape(client))
    counters = {k: v for k, v in changed.items() if k[0].endswith("_total") and k[0] in LIVE}
    assert {k[0] for k in counters} >= {
        "billingwatch_disputes_total", "billingwatch_early_fraud_warnings_total", "billingwatch_charges_total",
        "billingwatch_charge_outcomes_total", "billingwatch_charge_failures_total", "billingwatch_events_total",
        "billingwatch_dispute_amount_total", "billingwatch_charge_amount_total",
    }
    for key in counters:
        assert before.get(key) == 0.0, f"{key} was born at its first value: increase() would miss it"
    assert changed[("billingwatch_events_total", frozenset({"type": "other", "livemode": "false",
                                                                "account": "default"}.items()))] == 1


def test_a_new_currency_brings_every_per_currency_series_at_zero(make: Client) -> None:
    client = make()
    post(client, se.event("charge.succeeded", se.charge(currency="gbp")))
    samples = scrape(client)
    for name in ("billingwatch_refunds_total", "billingwatch_refund_amount_total", "billingwatch_dispute_amount_total",
                 "billingwatch_invoices_paid_total", "billingwatch_invoice_paid_amount_total"):
        key = (name, frozenset({"currency": "gbp", "livemode": "false", "account": "default"}.items()))
        assert samples.get(key) == 0.0, key
    assert samples[("billingwatch_charges_total",
                    frozenset({"status": "failed", "currency": "gbp", "livemode": "false",
                               "account": "default"}.items()))] == 0.0


def test_every_type_a_detector_reads_is_a_known_event_type() -> None:
    assert {t for d in REGISTRY for t in d.event_types} <= EVENT_TYPES


@pytest.mark.parametrize(("raw", "expected"), [("", ()), ("usd", ("usd",)), (" EUR, usd,eur ", ("eur", "usd"))])
def test_currencies_setting(raw: str, expected: tuple[str, ...]) -> None:
    assert from_env({"BILLINGWATCH_CURRENCIES": raw}).currencies == expected


@pytest.mark.parametrize("raw", ["usd,dollars", "us", "u|d", "usd;eur"])
def test_a_bad_currency_setting_is_a_one_line_config_error(raw: str) -> None:
    with pytest.raises(ConfigError) as error:
        from_env({"BILLINGWATCH_CURRENCIES": raw})
    assert str(error.value).startswith("BILLINGWATCH_CURRENCIES: ") and "\n" not in str(error.value)
