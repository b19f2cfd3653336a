"""Each stateful detector: firing cases and near misses, against both stores."""

import pytest

from billingwatch.fixtures import stripe_events as se
from billingwatch.store import Store
from tests.recording import anomaly_count, record

pytestmark = pytest.mark.anyio
T0 = 1_790_000_000


def charge_succeeded(created: int, **kw: object) -> dict[str, object]:
    return se.event("charge.succeeded", se.charge(**kw), created=created)  # type: ignore[arg-type]


# ------------------------------------------------------------------ duplicate_charge


async def test_two_charges_same_customer_amount_within_window_fire_once_with_both_ids(store: Store) -> None:
    await record(store, charge_succeeded(T0, charge_id="ch_first"))
    outcome = await record(store, charge_succeeded(T0 + 120, charge_id="ch_second"))
    assert [a["detector"] for a in outcome.anomalies] == ["duplicate_charge"]
    assert outcome.anomalies[0]["charge"] == "ch_second"
    assert outcome.anomalies[0]["related"] == ["ch_first"]
    assert await anomaly_count(store, "duplicate_charge") == 1
    log = await store.anomalies(10)
    assert {log[0]["charge"], *log[0]["related"]} == {"ch_first", "ch_second"}


async def test_window_edge_300s_fires_301s_does_not(store: Store) -> None:
    await record(store, charge_succeeded(T0, charge_id="ch_a", customer="cus_edge"))
    await record(store, charge_succeeded(T0 + 301, charge_id="ch_b", customer="cus_edge"))
    assert await anomaly_count(store, "duplicate_charge") == 0
    await record(store, charge_succeeded(T0 + 601, charge_id="ch_c", customer="cus_edge"))  # 300 s after ch_b
    assert await anomaly_count(store, "duplicate_charge") == 1


async def test_out_of_order_delivery_gives_the_same_answer(store: Store) -> None:
    await record(store, charge_succeeded(T0 + 200, charge_id="ch_late"))
    outcome = await record(store, charge_succeeded(T0, charge_id="ch_early"))
    assert outcome.anomalies and outcome.anomalies[0]["related"] == ["ch_late"]
    assert await anomaly_count(store, "duplicate_charge") == 1


async def test_failed_attempt_then_successful_retry_is_not_a_duplicate(store: Store) -> None:
    await record(store, se.event("charge.failed", se.charge(status="failed", reason="insufficient_funds"),
                                 created=T0))
    await record(store, charge_succeeded(T0 + 30))
    assert await anomaly_count(store, "duplicate_charge") == 0


async def test_redelivered_event_does_not_fire(store: Store) -> None:
    evt = charge_succeeded(T0)
    await record(store, evt)
    again = await record(store, evt)
    assert again.duplicate
    assert await anomaly_count(store, "duplicate_charge") == 0


async def test_events_of_one_payment_do_not_pair_with_each_other(store: Store) -> None:
    charge = se.charge(charge_id="ch_one", payment_intent="pi_one")
    await record(store, se.event("charge.succeeded", charge, created=T0))
    await record(store, se.event("payment_intent.succeeded",
                                 se.payment_intent(charge_id="ch_one", intent_id="pi_one"), created=T0 + 1))
    await record(store, se.event("invoice.paid", se.invoice(), created=T0 + 2))
    assert await anomaly_count(store, "duplicate_charge") == 0


async def test_payment_intent_events_alone_detect_duplicates(store: Store) -> None:
    await record(store, se.event("payment_intent.succeeded", se.payment_intent(charge_id="ch_p1"), created=T0))
    await record(store, se.event("payment_intent.succeeded", se.payment_intent(charge_id="ch_p2"), created=T0 + 5))
    assert await anomaly_count(store, "duplicate_charge") == 1


@pytest.mark.parametrize(
    "second",
    [
        {"amount": 2001},
        {"currency": "eur"},
        {"customer": "cus_bob"},
    ],
)
async def test_other_amount_currency_or_customer_is_not_a_duplicate(store: Store, second: dict[str, object]) -> None:
    await record(store, charge_succeeded(T0))
    await record(store, charge_succeeded(T0 + 10, **second))
    assert await anomaly_count(store, "duplicate_charge") == 0


async def test_test_mode_and_live_mode_charges_do_not_pair(store: Store) -> None:
    await record(store, se.event("charge.succeeded", se.charge(), created=T0, livemode=False))
    await record(store, se.event("charge.succeeded", se.charge(livemode=True), created=T0 + 10, livemode=True))
    assert await anomaly_count(store, "duplicate_charge", "false") == 0
    assert await anomaly_count(store, "duplicate_charge", "true") == 0


async def test_guest_payments_pair_by_card_fingerprint(store: Store) -> None:
    await record(store, charge_succeeded(T0, customer=None, fingerprint="fpA"))
    await record(store, charge_succeeded(T0 + 60, customer=None, fingerprint="fpB"))
    assert await anomaly_count(store, "duplicate_charge") == 0
    await record(store, charge_succeeded(T0 + 90, customer=None, fingerprint="fpA"))
    assert await anomaly_count(store, "duplicate_charge") == 1


async def test_window_threshold_comes_from_the_environment(store: Store) -> None:
    env = {"BILLINGWATCH_DETECTOR_DUPLICATE_CHARGE_WINDOW_SECONDS": "60"}
    await record(store, charge_succeeded(T0), environ=env)
    await record(store, charge_succeeded(T0 + 120), environ=env)
    assert await anomaly_count(store, "duplicate_charge") == 0


# ------------------------------------------------------------------ negative_invoice


async def test_negative_invoice_fires_once_per_invoice_whichever_events_carry_it(store: Store) -> None:
    inv = se.invoice(total=-500, invoice_id="in_neg", billing_reason="manual", status="open")
    for event_type in ("invoice.created", "invoice.finalized", "invoice.updated"):
        await record(store, se.event(event_type, inv, created=T0))
    assert await anomaly_count(store, "negative_invoice") == 1
    (logged,) = await store.anomalies(5)
    assert logged["invoice"] == "in_neg" and logged["amount"] == -500


async def test_zero_and_positive_invoices_do_not_fire(store: Store) -> None:
    await record(store, se.event("invoice.finalized", se.invoice(total=0), created=T0))
    await record(store, se.event("invoice.finalized", se.invoice(total=1), created=T0))
    assert await anomaly_count(store, "negative_invoice") == 0


# ------------------------------------------------------------------ currency_mismatch


async def test_new_currency_for_a_paying_customer_fires(store: Store) -> None:
    await record(store, charge_succeeded(T0, currency="usd", customer="cus_cur", amount=100))
    await record(store, charge_succeeded(T0 + 86400, currency="usd", customer="cus_cur", amount=100))
    assert await anomaly_count(store, "currency_mismatch") == 0
    outcome = await record(store, charge_succeeded(T0 + 2 * 86400, currency="eur", customer="cus_cur", amount=100))
    assert outcome.anomalies[0]["detector"] == "currency_mismatch"
    assert outcome.anomalies[0]["related"] == ["usd"]
    await record(store, charge_succeeded(T0 + 3 * 86400, currency="eur", customer="cus_cur", amount=100))
    assert await anomaly_count(store, "currency_mismatch") == 1


async def test_currency_mismatch_counts_the_same_in_either_order(store: Store) -> None:
    await record(store, charge_succeeded(T0 + 100, currency="gbp", customer="cus_order", amount=300))
    await record(store, charge_succeeded(T0, currency="usd", customer="cus_order", amount=300))
    assert await anomaly_count(store, "currency_mismatch") == 1


async def test_failed_charge_in_another_currency_does_not_fire(store: Store) -> None:
    await record(store, charge_succeeded(T0, currency="usd", customer="cus_f"))
    await record(store, se.event("charge.failed", se.charge(status="failed", currency="eur", customer="cus_f"),
                                 created=T0 + 5))
    assert await anomaly_count(store, "currency_mismatch") == 0


# ------------------------------------------------------------------ double_invoice


async def test_two_cycle_invoices_within_26h_fire(store: Store) -> None:
    first = se.invoice(invoice_id="in_c1", subscription="sub_dbl", created=T0)
    second = se.invoice(invoice_id="in_c2", subscription="sub_dbl", created=T0 + 25 * 3600)
    await record(store, se.event("invoice.created", first, created=T0))
    await record(store, se.event("invoice.paid", first, created=T0 + 3600))  # same invoice again
    assert await anomaly_count(store, "double_invoice") == 0
    outcome = await record(store, se.event("invoice.created", second, created=T0 + 25 * 3600))
    assert outcome.anomalies[0]["related"] == ["in_c1"]
    assert outcome.anomalies[0]["subscription"] == "sub_dbl"


async def test_monthly_renewals_and_non_cycle_invoices_do_not_fire(store: Store) -> None:
    await record(store, se.event("invoice.created", se.invoice(subscription="sub_m", created=T0), created=T0))
    await record(store, se.event("invoice.created",
                                 se.invoice(subscription="sub_m", created=T0 + 27 * 3600), created=T0 + 27 * 3600))
    await record(store, se.event("invoice.created",
                                 se.invoice(subscription="sub_m", created=T0 + 28 * 3600,
                                            billing_reason="subscription_update"), created=T0 + 28 * 3600))
    assert await anomaly_count(store, "double_invoice") == 0


async def test_old_api_shape_invoice_subscription_is_read(store: Store) -> None:
    for i, offset in enumerate((0, 3600)):
        inv = se.invoice(invoice_id=f"in_old{i}", subscription="sub_old", created=T0 + offset, old_shape=True)
        await record(store, se.event("invoice.finalized", inv, created=T0 + offset, api_version="2024-06-20"))
    assert await anomaly_count(store, "double_invoice") == 1
