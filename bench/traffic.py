"""A realistic mix of Stripe events for the benchmarks, built on the real shapes (billingwatch.fixtures)."""

import random
import time
from typing import Any

from billingwatch.fixtures import stripe_events as se

# Roughly what a subscription business receives: payments dominate, then invoices and
# subscription changes; refunds, failures and disputes are the tail.
MIX: tuple[tuple[str, float], ...] = (
    ("charge.succeeded", 0.30),
    ("payment_intent.succeeded", 0.20),
    ("invoice.paid", 0.15),
    ("customer.subscription.updated", 0.15),
    ("charge.failed", 0.07),
    ("invoice.payment_failed", 0.05),
    ("refund.created", 0.05),
    ("charge.dispute.created", 0.03),
)
CURRENCIES = ("usd", "usd", "usd", "eur", "gbp", "jpy")


def _one(kind: str, rng: random.Random, n: int, now: int) -> dict[str, Any]:
    number = rng.randrange(200_000)
    customer = f"cus_b{number:06d}"
    currency = CURRENCIES[number % len(CURRENCIES)]  # a customer pays in one currency
    amount = rng.randrange(500, 50_000)
    created = now - rng.randrange(0, 120)
    charge_id = f"ch_b{n:08d}"
    obj: dict[str, Any]
    if kind == "charge.succeeded":
        obj = se.charge(amount=amount, currency=currency, customer=customer, charge_id=charge_id)
    elif kind == "charge.failed":
        obj = se.charge(status="failed", amount=amount, currency=currency, customer=customer,
                        charge_id=charge_id, reason=rng.choice(("insufficient_funds", "do_not_honor", "fraudulent")))
    elif kind == "payment_intent.succeeded":
        obj = se.payment_intent(charge_id=charge_id, amount=amount, currency=currency, customer=customer,
                                intent_id=f"pi_b{n:08d}")
    elif kind == "invoice.paid":
        obj = se.invoice(total=amount, currency=currency, customer=customer, subscription=f"sub_{customer}",
                         invoice_id=f"in_b{n:08d}", created=created)
    elif kind == "invoice.payment_failed":
        obj = se.invoice(total=amount, currency=currency, customer=customer, subscription=f"sub_{customer}",
                         invoice_id=f"in_b{n:08d}", status="open", attempt_count=rng.randrange(1, 5),
                         created=created)
    elif kind == "customer.subscription.updated":
        obj = se.subscription(unit_amount=amount, currency=currency, customer=customer,
                              subscription_id=f"sub_{customer}", quantity=rng.randrange(1, 4),
                              status=rng.choice(("active", "active", "active", "past_due", "trialing")))
    elif kind == "refund.created":
        obj = se.refund(amount=amount // 2, currency=currency, refund_id=f"re_b{n:08d}", charge_id=charge_id)
    else:
        obj = se.dispute(amount=amount, currency=currency, charge_id=charge_id)
    return se.event(kind, obj, created=created, event_id=f"evt_bench{n:08d}")


def events(count: int, seed: int = 7, now: int | None = None) -> list[dict[str, Any]]:
    """`count` events with distinct ids, in a fixed pseudo-random mix."""
    rng = random.Random(seed)
    now = now or int(time.time())
    kinds, weights = zip(*MIX, strict=True)
    return [_one(kind, rng, n, now) for n, kind in enumerate(rng.choices(kinds, weights, k=count))]
