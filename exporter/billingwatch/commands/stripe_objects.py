"""Stripe objects and event envelopes for the simulator, built on Stripe's real shapes.

Each builder deep-copies the real object (stripe_shapes/, package data) and sets the fields
BillingWatch and a reader of the event care about; every other field keeps its real shape.
Simulated traffic is always test mode (livemode false).
"""

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

API_VERSION = "2025-03-31.basil"


@cache
def _shape(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("billingwatch.commands").joinpath("stripe_shapes", f"{name}.json").read_text()
    )
    return loaded


def shape(name: str) -> dict[str, Any]:
    return copy.deepcopy(_shape(name))


def event(event_type: str, obj: dict[str, Any], *, event_id: str, created: int, request_id: str | None = None,
          previous_attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    envelope = shape("event")
    envelope.update(id=event_id, type=event_type, created=created, livemode=False, api_version=API_VERSION,
                    data={"object": obj}, pending_webhooks=1, request={"id": request_id, "idempotency_key": None})
    if previous_attributes is not None:
        envelope["data"]["previous_attributes"] = previous_attributes
    return envelope


def charge(*, charge_id: str, customer: str | None, amount: int, currency: str, created: int,
           payment_intent: str | None, fingerprint: str, decline: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """A succeeded charge, or a failed one when `decline` = (failure_code, outcome.reason, outcome.type)."""
    obj = shape("charge")
    failed = decline is not None
    obj.update(
        id=charge_id, object="charge", status="failed" if failed else "succeeded", paid=not failed,
        captured=not failed, amount=amount, amount_captured=0 if failed else amount, amount_refunded=0,
        refunded=False, disputed=False, currency=currency, customer=customer, payment_intent=payment_intent,
        created=created, livemode=False, invoice=None,
        failure_code=decline[0] if decline else None,
        failure_message="Your card was declined." if decline else None,
    )
    obj["outcome"].update(
        type=decline[2] if decline else "authorized",
        reason=decline[1] if decline else None,
        network_status="declined_by_network" if decline and decline[2] == "issuer_declined"
        else "not_sent_to_network" if decline else "approved_by_network",
        seller_message=f"The bank returned the decline code `{decline[1]}`." if decline else "Payment complete.",
        risk_level="normal",
    )
    obj["payment_method_details"]["card"]["fingerprint"] = fingerprint
    return obj


def payment_intent(*, intent_id: str, charge_id: str, customer: str | None, amount: int, currency: str,
                   created: int) -> dict[str, Any]:
    obj = shape("payment_intent")
    obj.update(id=intent_id, object="payment_intent", status="succeeded", amount=amount, amount_received=amount,
               amount_capturable=0, currency=currency, customer=customer, latest_charge=charge_id, created=created,
               livemode=False, last_payment_error=None)
    return obj


def invoice(*, invoice_id: str, customer: str, subscription: str | None, total: int, currency: str,
            status: str, billing_reason: str, attempt_count: int, created: int, period_start: int,
            period_end: int) -> dict[str, Any]:
    obj = shape("invoice")
    paid = status == "paid"
    obj.update(
        id=invoice_id, object="invoice", customer=customer, currency=currency, total=total, subtotal=total,
        total_excluding_tax=total, amount_due=max(total, 0), amount_paid=max(total, 0) if paid else 0,
        amount_remaining=0 if paid else max(total, 0), status=status, billing_reason=billing_reason,
        attempt_count=attempt_count, attempted=attempt_count > 0, created=created, period_start=period_start,
        period_end=period_end, livemode=False, subscription=None,
        ending_balance=min(total, 0), starting_balance=0,
    )
    obj["parent"] = {
        "type": "subscription_details", "quote_details": None,
        "subscription_details": {"metadata": {}, "subscription": subscription},
    } if subscription else None
    return obj


def subscription(*, subscription_id: str, customer: str, unit_amount: int, quantity: int, currency: str,
                 status: str, created: int, period_start: int, period_end: int) -> dict[str, Any]:
    obj = shape("subscription")
    item = obj["items"]["data"][0]
    item["price"].update(unit_amount=unit_amount, unit_amount_decimal=str(unit_amount), currency=currency)
    item["price"]["recurring"].update(interval="month", interval_count=1)
    item["plan"].update(amount=unit_amount, amount_decimal=str(unit_amount), currency=currency, interval="month",
                        interval_count=1, billing_scheme="per_unit", livemode=False)
    item.update(quantity=quantity, subscription=subscription_id, current_period_start=period_start,
                current_period_end=period_end)
    obj["items"]["data"] = [item]
    obj.update(id=subscription_id, object="subscription", customer=customer, currency=currency, status=status,
               created=created, start_date=created, billing_cycle_anchor=period_start, livemode=False,
               canceled_at=created if status == "canceled" else None,
               ended_at=created if status == "canceled" else None)
    obj.pop("current_period_end", None)  # the new shape keeps the period on the items only
    obj.pop("current_period_start", None)
    return obj


def refund(*, refund_id: str, charge_id: str, payment_intent: str | None, amount: int, currency: str,
           created: int, reason: str | None) -> dict[str, Any]:
    obj = shape("refund")
    obj.update(id=refund_id, object="refund", charge=charge_id, payment_intent=payment_intent, amount=amount,
               currency=currency, created=created, reason=reason, status="succeeded")
    return obj


def dispute(*, dispute_id: str, charge_id: str, payment_intent: str | None, amount: int, currency: str,
            reason: str, created: int) -> dict[str, Any]:
    obj = shape("dispute")
    obj.update(id=dispute_id, object="dispute", charge=charge_id, payment_intent=payment_intent, amount=amount,
               currency=currency, reason=reason, created=created, status="needs_response", livemode=False)
    return obj


def early_fraud_warning(*, warning_id: str, charge_id: str, fraud_type: str, created: int) -> dict[str, Any]:
    obj = shape("radar_early_fraud_warning")
    obj.update(id=warning_id, object="radar.early_fraud_warning", charge=charge_id, fraud_type=fraud_type,
               actionable=True, created=created, livemode=False)
    return obj
