"""Pure parsing of Stripe objects, in both API-version shapes."""

import pytest

from billingwatch.fixtures import stripe_events as se
from billingwatch.money import monthly_amount, to_major
from billingwatch.recording.events import (
    InvalidEvent,
    charge_of,
    invoice_of,
    parse_event,
    payment_intent_of,
    subscription_of,
)


def test_event_envelope_from_the_real_shape() -> None:
    evt = se.event("charge.succeeded", se.charge(), created=1_700_000_000, livemode=True)
    evt["account"] = "acct_connected"
    event = parse_event(evt)
    assert (event.type, event.created, event.livemode, event.account) == (
        "charge.succeeded", 1_700_000_000, True, "acct_connected")
    assert event.object_kind == "charge"


def test_subscription_period_end_new_shape_on_items_old_shape_on_subscription() -> None:
    new = subscription_of(se.subscription(period_end=1_800_000_000))
    old = subscription_of(se.subscription(period_end=1_800_000_000, old_shape=True))
    assert new.current_period_end == old.current_period_end == 1_800_000_000
    assert new.items[0].unit_amount == 2000 and new.items[0].interval == "month"


def test_invoice_subscription_new_parent_shape_and_old_field() -> None:
    assert invoice_of(se.invoice(subscription="sub_new")).subscription == "sub_new"
    assert invoice_of(se.invoice(subscription="sub_old", old_shape=True)).subscription == "sub_old"
    assert invoice_of(se.invoice(subscription=None)).subscription is None


def test_payment_intent_latest_charge_or_old_charges_list() -> None:
    intent = se.payment_intent(charge_id="ch_latest")
    assert payment_intent_of(intent).latest_charge == "ch_latest"
    intent["latest_charge"] = None
    intent["charges"] = {"object": "list", "data": [{"id": "ch_listed"}]}
    assert payment_intent_of(intent).latest_charge == "ch_listed"


def test_charge_failure_reason_prefers_the_decline_code() -> None:
    failed = charge_of(se.charge(status="failed", reason="insufficient_funds"))
    assert failed.failure_reason == "insufficient_funds"
    assert charge_of(se.charge(status="failed")).failure_reason == "card_declined"


def test_expanded_ids_are_read() -> None:
    obj = se.charge()
    obj["customer"] = {"id": "cus_expanded", "object": "customer"}
    assert charge_of(obj).customer == "cus_expanded"


@pytest.mark.parametrize(
    "body",
    [None, [], "event", {"object": "event"}, {"object": "event", "id": "", "type": "a.b", "created": 1,
                                             "livemode": False, "data": {"object": {}}}],
)
def test_not_an_event(body: object) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(body)


def test_money_helpers() -> None:
    assert to_major(1999, "usd") == pytest.approx(19.99)
    assert to_major(500, "jpy") == 500
    assert to_major(1500, "kwd") == pytest.approx(1.5)
    assert monthly_amount(12000, 1, "year", 1) == pytest.approx(1000)
    assert monthly_amount(700, 1, "week", 1) == pytest.approx(700 * 52 / 12)
    assert monthly_amount(100, 3, "month", 3) == pytest.approx(100)
    assert monthly_amount(100, 1, "fortnight", 1) == 0
