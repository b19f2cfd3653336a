"""A fixed scenario's whole /metrics output, compared with a committed copy.

The scenario touches every store-held family (charges of each outcome, refunds, disputes,
early fraud warnings, invoices, subscriptions, anomalies, lag, history, the money signals). The exposition must
stay the same across refactors; a deliberate change regenerates the copy with
`BILLINGWATCH_REGENERATE_GOLDEN=1 python -m pytest tests/test_metrics_golden.py` and the diff
is reviewed like code. Both stores must give the same output.
"""

import os
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from billingwatch.config import from_env
from billingwatch.fixtures import stripe_events as se
from billingwatch.http.app import create_app
from billingwatch.store import MemoryStore, RedisStore, Store
from tests.conftest import SECRET

GOLDEN = Path(__file__).parent / "golden" / "metrics.txt"
# The same scenario into the account eu of two (BILLINGWATCH_ACCOUNTS_FILE); default stays empty.
GOLDEN_ACCOUNTS = Path(__file__).parent / "golden" / "metrics_accounts.txt"
EU_SECRET = "whsec_GoldenEuSecret1"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z: the app's clock for the whole scenario
# Per-process families: they depend on the machine, not on the events.
VOLATILE = ("process_", "python_", "billingwatch_build_info",
            # The Redis server's own figures (none with the in-process store).
            "billingwatch_store_used_memory_bytes", "billingwatch_store_max_memory_bytes",
            "billingwatch_store_evicted_keys")


def scenario() -> list[tuple[dict[str, Any], bool]]:
    """(event, replayed) pairs; ids and times are fixed so the output is too."""
    ids = iter(range(1, 1000))

    def ev(event_type: str, obj: dict[str, Any], ago: int, livemode: bool = False) -> dict[str, Any]:
        return se.event(event_type, obj, created=NOW - ago, livemode=livemode, event_id=f"evt_golden_{next(ids):03d}")

    live = [
        ev("charge.succeeded", se.charge(charge_id="ch_g1", amount=1999, currency="usd", customer="cus_a"), 5),
        ev("charge.succeeded", se.charge(charge_id="ch_g2", amount=1999, currency="usd", customer="cus_a"), 3),
        ev("charge.succeeded", se.charge(charge_id="ch_g3", amount=500, currency="jpy", customer="cus_b"), 40),
        ev("charge.failed", se.charge(charge_id="ch_g4", status="failed", reason="insufficient_funds",
                                      customer="cus_c"), 2),
        ev("charge.failed", se.charge(charge_id="ch_g5", status="failed", reason="no_such_code",
                                      customer="cus_c"), 700),
        ev("charge.pending", se.charge(charge_id="ch_g6", status="pending", currency="eur", customer="cus_d"), 1),
        ev("refund.created", se.refund(refund_id="re_g1", amount=700, currency="usd"), 20),
        ev("refund.created", se.refund(refund_id="re_g2", amount=300, currency="usd", status="pending"), 19),
        ev("refund.updated", se.refund(refund_id="re_g2", amount=300, currency="usd", status="failed"), 18),
        ev("charge.dispute.created", se.dispute(amount=1999, currency="usd", reason="fraudulent"), 30),
        ev("radar.early_fraud_warning.created", se.early_fraud_warning(), 30),
        ev("invoice.paid", se.invoice(invoice_id="in_g1", total=2000, subscription="sub_g1", customer="cus_e"), 9),
        ev("invoice.payment_succeeded", se.invoice(invoice_id="in_g1", total=2000, subscription="sub_g1",
                                                   customer="cus_e"), 9),
        ev("invoice.payment_failed", se.invoice(invoice_id="in_g2", status="open", attempt_count=2,
                                                subscription="sub_g2", customer="cus_f"), 4000),
        ev("invoice.created", se.invoice(invoice_id="in_g3", total=-500, subscription="sub_g3",
                                         customer="cus_g"), 6),
        ev("customer.subscription.created", se.subscription(subscription_id="sub_g1", customer="cus_e",
                                                            unit_amount=2000, period_end=NOW + 86400), 100),
        ev("customer.subscription.created", se.subscription(subscription_id="sub_g2", customer="cus_f",
                                                            unit_amount=12000, interval="year",
                                                            period_end=NOW - 5 * 86400), 200),
        ev("customer.subscription.created", se.subscription(subscription_id="sub_g3", customer="cus_g",
                                                            status="trialing"), 300),
        ev("customer.subscription.deleted", se.subscription(subscription_id="sub_g3", customer="cus_g",
                                                            status="canceled"), 50),
        ev("charge.succeeded", se.charge(charge_id="ch_g7", amount=4200, currency="gbp", customer="cus_h",
                                         livemode=True), 2, livemode=True),
        # The money signals (issue 28): each family moved once, a redelivered payout counted once.
        ev("payout.paid", se.payout(payout_id="po_g1", amount=150000, currency="usd"), 60),
        ev("payout.paid", se.payout(payout_id="po_g1", amount=150000, currency="usd"), 59),
        ev("payout.failed", se.payout(payout_id="po_g2", status="failed", amount=2500, currency="eur",
                                      failure_code="account_closed"), 58),
        ev("charge.dispute.closed", {**se.dispute(dispute_id="dp_g1", amount=1999, currency="usd"), "status": "lost"},
           57),
        ev("charge.dispute.closed", {**se.dispute(dispute_id="dp_g2"), "status": "won"}, 56),
        ev("charge.dispute.funds_withdrawn", se.dispute(dispute_id="dp_g1", amount=1999, currency="usd"), 55),
        ev("payment_intent.payment_failed", se.payment_intent_failed(intent_id="pi_g1"), 54),
        ev("payment_intent.payment_failed", se.payment_intent_failed(intent_id="pi_g2", code="card_declined"), 53),
        ev("invoice.payment_action_required", se.invoice(invoice_id="in_g4", status="open", customer="cus_i"), 52),
        ev("review.opened", se.review(review_id="prv_g1", created=NOW - 7200), 7200),
        ev("review.opened", se.review(review_id="prv_g2", created=NOW - 3600, opened_reason="manual"), 3600),
        ev("review.closed", se.review(review_id="prv_g2", is_open=False, closed_reason="refunded_as_fraud",
                                      created=NOW - 3600), 51),
        ev("invoice.marked_uncollectible", {**se.invoice(invoice_id="in_g5", total=5000, status="uncollectible",
                                                         customer="cus_j"), "amount_remaining": 5000}, 50),
    ]
    history = [
        ev("charge.succeeded", se.charge(charge_id="ch_h1", amount=900, currency="usd", customer="cus_z"),
           20 * 86400),
        ev("charge.succeeded", se.charge(charge_id="ch_h2", amount=900, currency="usd", customer="cus_z"),
           20 * 86400 - 60),
        ev("customer.subscription.created", se.subscription(subscription_id="sub_h1", customer="cus_y",
                                                            unit_amount=3000, period_end=NOW + 86400),
           10 * 86400),
    ]
    return [(e, False) for e in live] + [(e, True) for e in history]


def exposition(client: TestClient, path: str = "/webhooks/stripe", secret: str = SECRET) -> str:
    for evt, replayed in scenario():
        payload = se.body(evt)
        headers = se.signed_headers(payload, secret)
        if replayed:
            headers["BillingWatch-Replay"] = "1"
        response = client.post(path, content=payload, headers=headers)
        assert response.status_code == 200, response.text
    text = client.get("/metrics").text
    return "".join(line + "\n" for line in text.splitlines() if not family_of(line).startswith(VOLATILE))


def family_of(line: str) -> str:
    """The metric name a line of the text format is about ("# HELP name ...", "name{...} value")."""
    if line.startswith("#"):
        return line.split(" ")[2]
    return re.split(r"[{ ]", line, maxsplit=1)[0]


@pytest.fixture(params=["memory", "redis"])
def golden_store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return RedisStore(request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix"))


def test_the_scenario_gives_the_committed_exposition(golden_store: Store, make_client: Any) -> None:
    text = exposition(make_client(store=golden_store, clock=lambda: float(NOW)))
    if os.environ.get("BILLINGWATCH_REGENERATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_two_accounts_give_the_committed_exposition(golden_store: Store, tmp_path: Path) -> None:
    """Every family once, each series in both accounts (default's at 0 or absent as a fresh
    exporter's are), eu's figures exactly the single-account scenario's."""
    (tmp_path / "default").write_text(SECRET)
    (tmp_path / "eu").write_text(EU_SECRET)
    (tmp_path / "accounts.yml").write_text(
        f"accounts:\n  - name: default\n    webhook_secret_files: [{tmp_path}/default]\n"
        f"  - name: eu\n    webhook_secret_files: [{tmp_path}/eu]\n")
    settings = from_env({"BILLINGWATCH_ACCOUNTS_FILE": str(tmp_path / "accounts.yml")})
    app = create_app(settings, clock=lambda: float(NOW), stores={"default": MemoryStore(), "eu": golden_store})
    with TestClient(app, base_url="http://localhost", client=("127.0.0.1", 50000)) as client:
        text = exposition(client, "/webhooks/stripe/eu", EU_SECRET)
    if os.environ.get("BILLINGWATCH_REGENERATE_GOLDEN") == "1":
        GOLDEN_ACCOUNTS.write_text(text)
    assert text == GOLDEN_ACCOUNTS.read_text()
    eu = [line.replace('account="eu"', 'account="default"') for line in text.splitlines() if 'account="eu"' in line]
    assert eu and set(eu) <= set(GOLDEN.read_text().splitlines())
