"""Each stateful detector: firing cases and near misses, against both stores."""

import pytest

from billingwatch.fixtures import stripe_events as se
from billingwatch.levels import alert_severity, priority
from billingwatch.store import Store
from tests.metrics import total
from tests.recording import anomaly_count, figures, record

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


# ------------------------------------------------------------------ subscription_downgrade


def seats(quantity: int, *, price_id: str = "price_team_monthly", unit_amount: int = 1500,
          item_id: str = "si_team", product: str = "prod_team", **kw: object) -> dict[str, object]:
    return se.subscription_item(price_id=price_id, product=product, unit_amount=unit_amount, quantity=quantity,
                                item_id=item_id, **kw)  # type: ignore[arg-type]


ADDON = {"price_id": "price_sso", "product": "prod_sso", "unit_amount": 5000, "item_id": "si_sso"}


async def test_seat_cut_fires_once_with_quantities_and_mrr(store: Store) -> None:
    evt = se.subscription_updated([seats(10)], [seats(8)], created=T0, request_id="req_portal")
    outcome = await record(store, evt)
    (found,) = outcome.anomalies
    assert found["detector"] == "subscription_downgrade" and found["severity"] == "medium"  # 20% cut, requested
    assert found["subscription"] == "sub_alice" and found["amount"] == 3000 and found["currency"] == "usd"
    details = found["details"]
    assert details["mrr_before"] == 15000 and details["mrr_after"] == 12000 and details["cut_percent"] == 20.0
    assert details["changes"] == [{"kinds": ["quantity_cut"], "product": "prod_team",
                                   "price_before": "price_team_monthly", "price_after": "price_team_monthly",
                                   "quantity_before": 10, "quantity_after": 8}]
    assert details["origin"] == "request" and details["request"] == "req_portal"
    assert (await store.anomalies(5))[0]["details"] == details  # the log keeps it exactly, both stores
    assert (await record(store, evt)).duplicate
    assert await anomaly_count(store, "subscription_downgrade") == 1


async def test_removed_addon_without_request_or_schedule_is_one_severity_higher(store: Store) -> None:
    before = [seats(2, unit_amount=2500), se.subscription_item(**ADDON)]  # type: ignore[arg-type]
    outcome = await record(store, se.subscription_updated(before, [seats(2, unit_amount=2500)], request_id=None,
                                                          created=T0))
    (found,) = outcome.anomalies
    # 5000 of 10000 lost: high; nobody asked for it: critical.
    assert found["severity"] == "critical" and found["details"]["origin"] == "none"
    assert found["details"]["changes"][0]["kinds"] == ["removed"]
    assert found["details"]["changes"][0]["price_before"] == "price_sso"
    figures_ = await figures(store)
    assert total(figures_, "billingwatch_anomalies_total", detector="subscription_downgrade",
                 severity="critical", priority="P1", livemode="false") == 1


async def test_scheduled_move_to_a_cheaper_yearly_price_of_the_same_product(store: Store) -> None:
    # 1500/month → 12000/year (1000/month): a cheaper price of the same product, on a new item.
    after = [seats(1, price_id="price_team_yearly", unit_amount=12000, interval="year", item_id="si_new")]
    outcome = await record(store, se.subscription_updated([seats(1)], after, request_id=None,
                                                          schedule="sub_sched_1", created=T0))
    (found,) = outcome.anomalies
    assert found["details"]["changes"][0]["kinds"] == ["cheaper_price"]
    assert found["details"]["changes"][0]["price_after"] == "price_team_yearly"
    assert found["details"]["origin"] == "schedule"
    assert found["severity"] == "medium"  # a 33% cut, planned by a schedule: not raised


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([seats(5)], [seats(6)]),  # more seats
        ([seats(5)], [seats(5, price_id="price_team_plus", unit_amount=2000)]),  # dearer price
        ([seats(1, unit_amount=1500)], [seats(1, price_id="price_y", unit_amount=18000, interval="year")]),  # same
        # A plan swap to another product that bills more: the old item goes, but MRR rises.
        ([seats(1)], [se.subscription_item(price_id="price_biz", product="prod_biz", unit_amount=9900)]),
    ],
)
async def test_upgrades_and_equal_moves_stay_silent(store: Store, before: list[dict[str, object]],
                                                    after: list[dict[str, object]]) -> None:
    await record(store, se.subscription_updated(before, after, created=T0))  # type: ignore[arg-type]
    assert await anomaly_count(store, "subscription_downgrade") == 0


async def test_update_without_item_changes_stays_silent(store: Store) -> None:
    # cancel_at_period_end flipped: no items in previous_attributes; the end is counted when it happens.
    sub = se.subscription()
    sub["cancel_at_period_end"] = True
    await record(store, se.event("customer.subscription.updated", sub, created=T0,
                                 previous_attributes={"cancel_at_period_end": False}))
    assert await anomaly_count(store, "subscription_downgrade") == 0


async def test_downgrade_severity_thresholds_come_from_the_environment(store: Store) -> None:
    env = {"BILLINGWATCH_DETECTOR_SUBSCRIPTION_DOWNGRADE_HIGH_CUT_PERCENT": "10"}
    outcome = await record(store, se.subscription_updated([seats(10)], [seats(8)], created=T0), environ=env)
    assert outcome.anomalies[0]["severity"] == "high"


def test_every_severity_a_detector_can_emit_is_exposed_at_zero() -> None:
    from billingwatch.detectors import build_detectors, severities

    by_name = {d.name: d for d in build_detectors({})}
    assert severities(by_name["subscription_downgrade"]) == ("critical", "high", "medium", "low")
    assert severities(by_name["large_refund"]) == ("high", "medium")
    assert severities(by_name["duplicate_charge"]) == ("critical",)


async def test_all_downgrade_and_refund_severities_exist_before_the_first_anomaly(store: Store) -> None:
    samples = await figures(store)
    for detector, levels in (("subscription_downgrade", ("critical", "high", "medium", "low")),
                             ("large_refund", ("high", "medium"))):
        for level in levels:
            assert total(samples, "billingwatch_anomalies_total", detector=detector, severity=alert_severity(level),
                         priority=priority(level), livemode="true") == 0


# ------------------------------------------------------------------ large_refund


def refund_created(created: int, **kw: object) -> dict[str, object]:
    return se.event("refund.created", se.refund(created=created, **kw), created=created)  # type: ignore[arg-type]


async def test_single_refund_at_the_threshold_fires_once_whichever_events_carry_it(store: Store) -> None:
    refund = se.refund(amount=100_000, refund_id="re_big", charge_id="ch_big", created=T0)
    outcome = await record(store, se.event("refund.created", refund, created=T0))
    assert [(a["detector"], a["severity"]) for a in outcome.anomalies] == [("large_refund", "medium")]
    assert outcome.anomalies[0]["details"] == {"refund": "re_big"} and outcome.anomalies[0]["amount"] == 100_000
    # The same refund listed on charge.refunded (older API versions) and updated later: judged once.
    charge = se.charge(charge_id="ch_big", amount=100_000)
    charge["refunds"] = {"object": "list", "data": [refund], "has_more": False}
    await record(store, se.event("charge.refunded", charge, created=T0 + 2))
    await record(store, se.event("refund.updated", refund, created=T0 + 60))
    assert await anomaly_count(store, "large_refund") == 1


async def test_refund_just_below_the_threshold_or_in_an_unlisted_currency_stays_silent(store: Store) -> None:
    await record(store, refund_created(T0, amount=99_999))
    await record(store, refund_created(T0, amount=100_000, currency="jpy"))  # jpy's threshold is 150000
    await record(store, refund_created(T0, amount=10**9, currency="inr"))  # no default for inr, no "*"
    assert await anomaly_count(store, "large_refund") == 0


async def test_failed_or_canceled_refunds_never_count(store: Store) -> None:
    failed = se.refund(amount=500_000, refund_id="re_failed", created=T0, status="failed")
    await record(store, se.event("refund.failed", failed, created=T0))
    # A late copy of the same refund in an earlier state is not judged as a single refund either.
    await record(store, se.event("refund.created", {**failed, "status": "pending"}, created=T0 - 5))
    for status in ("canceled", "failed"):  # nor do they add to the customer's daily total
        await record(store, refund_created(T0, amount=500_000, status=status, customer="cus_f"))
    assert await anomaly_count(store, "large_refund") == 0


async def test_per_currency_thresholds_come_from_the_environment(store: Store) -> None:
    env = {"BILLINGWATCH_DETECTOR_LARGE_REFUND_SINGLE_REFUND": "usd=50,*=20000"}
    await record(store, refund_created(T0, amount=5_000), environ=env)  # 50.00 usd
    await record(store, refund_created(T0, amount=1_999_900, currency="inr"), environ=env)  # 19999 inr
    assert await anomaly_count(store, "large_refund") == 1
    await record(store, refund_created(T0, amount=2_000_000, currency="inr"), environ=env)
    assert await anomaly_count(store, "large_refund") == 2


@pytest.mark.parametrize("bad", ["usd=1000,usd=5", "usd=ten", "xyz=10", "usd=0", "usd 1000", ""])
def test_bad_per_currency_threshold_is_a_start_up_error(bad: str) -> None:
    from billingwatch.config import ConfigError
    from billingwatch.detectors import build_detectors

    name = "BILLINGWATCH_DETECTOR_LARGE_REFUND_CUSTOMER_TOTAL"
    if bad == "":
        build_detectors({name: bad})  # empty: the default
        return
    with pytest.raises(ConfigError, match=name):
        build_detectors({name: bad})


async def test_customer_refunds_reaching_the_daily_total_fire_once(store: Store) -> None:
    # 900 + 900 usd within 24 h is below 2500; the third, 23 h after the first, reaches it.
    for i, offset in enumerate((0, 3600, 23 * 3600)):
        await record(store, refund_created(T0 + offset, amount=90_000, refund_id=f"re_d{i}", customer="cus_r"))
    assert await anomaly_count(store, "large_refund") == 1
    (found,) = await store.anomalies(5)
    assert found["severity"] == "high" and found["related"] == ["re_d0", "re_d1"]
    # A fourth keeps the total above the threshold: the same episode, not a new anomaly.
    await record(store, refund_created(T0 + 23 * 3600 + 60, amount=90_000, customer="cus_r"))
    assert await anomaly_count(store, "large_refund") == 1


async def test_daily_total_is_event_time_and_order_independent(store: Store) -> None:
    # Delivered newest first: the total of the span holding both still reaches the threshold.
    await record(store, refund_created(T0 + 3600, amount=150_000 - 1, refund_id="re_late", customer="cus_o"),
                 received_at=T0 + 7200)
    outcome = await record(store, refund_created(T0, amount=100_001, refund_id="re_early", customer="cus_o"),
                           received_at=T0 + 7200)
    assert [a["related"] for a in outcome.anomalies if a["severity"] == "high"] == [["re_late"]]


async def test_refunds_more_than_24h_apart_or_of_other_customers_do_not_add_up(store: Store) -> None:
    await record(store, refund_created(T0, amount=200_000, customer="cus_a"))
    await record(store, refund_created(T0 + 86401, amount=200_000, customer="cus_a"))
    await record(store, refund_created(T0 + 10, amount=200_000, customer="cus_b"))
    await record(store, refund_created(T0 + 20, amount=200_000, customer="cus_b", currency="eur"))
    samples = await figures(store)
    assert total(samples, "billingwatch_anomalies_total", detector="large_refund", priority="P2",
                 livemode="false") == 0
    # The redelivered event of a counted refund adds nothing.
    evt = refund_created(T0 + 30, amount=200_000, customer="cus_c")
    await record(store, evt)
    await record(store, evt)
    # Nor does the same refund in another event (its id and amount make it one member of the sum).
    await record(store, se.event("refund.updated", evt["data"]["object"], created=T0 + 90))  # type: ignore[index]
    assert total(await figures(store), "billingwatch_anomalies_total", detector="large_refund", priority="P2",
                 livemode="false") == 0


async def test_credit_note_credit_counts_its_non_refunded_part(store: Store) -> None:
    # 1200 usd credited to the balance: a large refund; the refunded part comes as its own refund.
    note = se.credit_note(total=150_000, refunded=30_000, refund_id="re_cn", note_id="cn_big", created=T0)
    outcome = await record(store, se.event("credit_note.created", note, created=T0))
    assert [(a["amount"], a["details"]) for a in outcome.anomalies] == [(120_000, {"refund": "cn_big"})]
    assert outcome.anomalies[0]["invoice"] == "in_credited"


async def test_pre_payment_or_fully_refunded_credit_notes_stay_silent(store: Store) -> None:
    await record(store, se.event("credit_note.created", se.credit_note(total=500_000, note_type="pre_payment"),
                                 created=T0))
    await record(store, se.event("credit_note.created", se.credit_note(total=500_000, refunded=500_000),
                                 created=T0))
    assert await anomaly_count(store, "large_refund") == 0


async def test_double_invoice_window_covers_26h_inclusive(store: Store) -> None:
    """The original's timezone_billing_error: invoiced twice within 26 h."""
    for sub, gap in (("sub_26h", 26 * 3600), ("sub_26h1s", 26 * 3600 + 1)):
        for i, at in enumerate((T0, T0 + gap)):
            inv = se.invoice(invoice_id=f"in_{sub}_{i}", subscription=sub, created=at)
            await record(store, se.event("invoice.created", inv, created=at))
    (found,) = await store.anomalies(5)
    assert found["subscription"] == "sub_26h"
