"""Stripe-shaped test events, built on the real object shapes in tests/stripe_shapes/.

Every builder takes the real fixture object, overrides the fields a test cares about, and
wraps it in a real event envelope. `sign` signs a body as Stripe does, with the stripe SDK.
"""

import copy
import itertools
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import stripe

SHAPES = Path(__file__).parent / "stripe_shapes"
SECRET = "whsec_test_secret_for_tests_only"
_ids = itertools.count(1)


@cache
def _shape(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SHAPES / f"{name}.json").read_text())
    return loaded


def shape(name: str) -> dict[str, Any]:
    return copy.deepcopy(_shape(name))


def new_id(prefix: str) -> str:
    return f"{prefix}_test{next(_ids):08d}{int(time.time() * 1000) % 100000:05d}"


def event(
    event_type: str,
    obj: dict[str, Any],
    *,
    created: int | None = None,
    livemode: bool = False,
    event_id: str | None = None,
    previous_attributes: dict[str, Any] | None = None,
    api_version: str = "2025-03-31.basil",
) -> dict[str, Any]:
    envelope = shape("event")
    envelope.update(
        id=event_id or new_id("evt"),
        type=event_type,
        created=created if created is not None else int(time.time()),
        livemode=livemode,
        api_version=api_version,
        data={"object": obj},
    )
    if previous_attributes is not None:
        envelope["data"]["previous_attributes"] = previous_attributes
    return envelope


def charge(
    *,
    status: str = "succeeded",
    amount: int = 2000,
    currency: str = "usd",
    customer: str | None = "cus_alice",
    charge_id: str | None = None,
    payment_intent: str | None = None,
    reason: str | None = None,
    fingerprint: str = "Xt5EWLLDS7FJjR1c",
    livemode: bool = False,
) -> dict[str, Any]:
    obj = shape("charge")
    obj.update(
        id=charge_id or new_id("ch"),
        status=status,
        paid=status == "succeeded",
        amount=amount,
        amount_captured=amount if status == "succeeded" else 0,
        currency=currency,
        customer=customer,
        payment_intent=payment_intent,
        livemode=livemode,
        failure_code="card_declined" if status == "failed" else None,
    )
    obj["outcome"].update(
        type="authorized" if status == "succeeded" else "issuer_declined",
        reason=reason if status == "failed" else None,
    )
    obj["payment_method_details"]["card"]["fingerprint"] = fingerprint
    return obj


def payment_intent(*, charge_id: str, amount: int = 2000, currency: str = "usd",
                   customer: str | None = "cus_alice", intent_id: str | None = None) -> dict[str, Any]:
    obj = shape("payment_intent")
    obj.update(
        id=intent_id or new_id("pi"), status="succeeded", amount=amount, amount_received=amount,
        currency=currency, customer=customer, latest_charge=charge_id,
    )
    return obj


def invoice(
    *,
    total: int = 2000,
    currency: str = "usd",
    customer: str = "cus_alice",
    subscription: str | None = "sub_alice",
    billing_reason: str = "subscription_cycle",
    status: str = "paid",
    attempt_count: int = 1,
    invoice_id: str | None = None,
    created: int | None = None,
    old_shape: bool = False,
) -> dict[str, Any]:
    obj = shape("invoice")
    obj.update(
        id=invoice_id or new_id("in"), total=total, subtotal=total, amount_due=max(total, 0),
        amount_paid=max(total, 0) if status == "paid" else 0, currency=currency, customer=customer,
        billing_reason=billing_reason, status=status, attempt_count=attempt_count,
        created=created if created is not None else int(time.time()),
    )
    if old_shape:  # API versions before 2025-03-31 carry the subscription id on the invoice
        obj["subscription"] = subscription
        obj["parent"] = None
    else:
        obj["subscription"] = None
        obj["parent"] = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription},
        }
    return obj


def subscription(
    *,
    status: str = "active",
    unit_amount: int = 2000,
    quantity: int = 1,
    currency: str = "usd",
    interval: str = "month",
    interval_count: int = 1,
    period_end: int | None = None,
    customer: str = "cus_alice",
    subscription_id: str = "sub_alice",
    old_shape: bool = False,
) -> dict[str, Any]:
    obj = shape("subscription")
    end = period_end if period_end is not None else int(time.time()) + 30 * 86400
    item = obj["items"]["data"][0]
    item["price"].update(unit_amount=unit_amount, currency=currency)
    item["price"]["recurring"].update(interval=interval, interval_count=interval_count)
    item["plan"].update(amount=unit_amount, currency=currency, interval=interval, interval_count=interval_count)
    item["quantity"] = quantity
    obj.update(id=subscription_id, status=status, customer=customer, currency=currency)
    if old_shape:  # before 2025-03-31 the period is on the subscription
        obj["current_period_end"] = end
        item.pop("current_period_end", None)
    else:
        obj.pop("current_period_end", None)
        item["current_period_end"] = end
        item["current_period_start"] = end - 30 * 86400
    obj["items"]["data"] = [item]
    return obj


def dispute(*, amount: int = 2000, currency: str = "usd", reason: str = "fraudulent",
            charge_id: str = "ch_disputed") -> dict[str, Any]:
    obj = shape("dispute")
    obj.update(id=new_id("dp"), amount=amount, currency=currency, reason=reason, charge=charge_id)
    return obj


def refund(*, amount: int = 500, currency: str = "usd", refund_id: str | None = None,
           charge_id: str = "ch_refunded", status: str = "succeeded") -> dict[str, Any]:
    obj = shape("refund")
    obj.update(id=refund_id or new_id("re"), amount=amount, currency=currency, charge=charge_id, status=status)
    return obj


def early_fraud_warning(*, fraud_type: str = "made_with_stolen_card", charge_id: str = "ch_fraud") -> dict[str, Any]:
    obj = shape("radar_early_fraud_warning")
    obj.update(id=new_id("issfr"), fraud_type=fraud_type, charge=charge_id)
    return obj


def body(evt: dict[str, Any]) -> bytes:
    return json.dumps(evt).encode()


def sign(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for this payload."""
    return str(stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp=timestamp))


def signed_headers(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {"Stripe-Signature": sign(payload, secret, timestamp), "Content-Type": "application/json"}
