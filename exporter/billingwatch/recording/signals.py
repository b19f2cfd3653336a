"""The money signals (issue 28): payouts, dispute outcomes and funds, PaymentIntent failures,
invoices needing action, Radar reviews, bad debt. Stripe objects → typed facts → what recording
one changes. Pure functions: no I/O, no clock.

Whatever a second event about the same object could double is counted once per object (plan.py
makes each a "once" check); the reviews open now are per-review state in one "track" check
(recording/plan.py Check, store/apply.lua).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from billingwatch.metrics import families as fam
from billingwatch.metrics import fields
from billingwatch.metrics.labels import (
    DISPUTE_FUNDS_EVENTS,
    PAYMENT_INTENT_FAILURE_CODES,
    PAYOUT_EVENTS,
    PAYOUT_FAILURE_CODES,
    REVIEW_CLOSED_REASONS,
    REVIEW_OPENED_REASONS,
    known,
)
from billingwatch.recording.events import (
    Event,
    InvalidEvent,
    _amount,
    _currency,
    _map,
    _opt_str,
    _str,
    dispute_of,
    invoice_of,
)

# The reviews open now are kept in one set per mode; far more than a team ever has open at once
# (the oldest go first beyond it, and docs/events.md says so).
REVIEW_CAP = 10_000
_DISPUTE_OUTCOMES = frozenset({"won", "lost", "warning_closed"})


@dataclass(frozen=True)
class Payout:
    id: str
    status: str
    amount: int
    currency: str
    failure_code: str | None


@dataclass(frozen=True)
class Review:
    id: str
    created: int  # when it was opened
    open: bool
    opened_reason: str | None
    closed_reason: str | None


@dataclass(frozen=True)
class PaymentIntentFailure:
    id: str
    code: str | None  # last_payment_error.code


@dataclass(frozen=True)
class UncollectibleInvoice:
    id: str
    currency: str
    amount: int  # what was left to pay when it was written off


def payout_of(obj: Mapping[str, Any]) -> Payout:
    where = "payout"
    return Payout(
        id=_str(obj, "id", where),
        status=_str(obj, "status", where),
        amount=_amount(obj, "amount", where),
        currency=_currency(obj, where),
        failure_code=_opt_str(obj, "failure_code", where),
    )


def review_of(obj: Mapping[str, Any]) -> Review:
    where = "review"
    created = obj.get("created")
    if isinstance(created, bool) or not isinstance(created, int) or not 0 < created <= 10**15:
        raise InvalidEvent(f"{where}.created must be a positive unix time")
    is_open = obj.get("open")
    if not isinstance(is_open, bool):
        raise InvalidEvent(f"{where}.open must be a boolean")
    return Review(
        id=_str(obj, "id", where),
        created=created,
        open=is_open,
        opened_reason=_opt_str(obj, "opened_reason", where),
        closed_reason=_opt_str(obj, "closed_reason", where),
    )


def payment_intent_failure_of(obj: Mapping[str, Any]) -> PaymentIntentFailure:
    where = "payment_intent"
    error = _map(obj, "last_payment_error")
    return PaymentIntentFailure(id=_str(obj, "id", where), code=_opt_str(error, "code", where + ".last_payment_error"))


def uncollectible_invoice_of(obj: Mapping[str, Any]) -> UncollectibleInvoice:
    """amount_remaining where the API version has it, else total minus what was paid."""
    invoice = invoice_of(obj)
    if "amount_remaining" in obj:
        remaining = _amount(obj, "amount_remaining", "invoice")
    else:
        remaining = max(invoice.total - invoice.amount_paid, 0)
    return UncollectibleInvoice(invoice.id, invoice.currency, remaining)


@dataclass(frozen=True)
class ReviewState:
    """A review's place in the set of reviews open now (`key`): opened at `at`, or closed."""

    key: str
    member: str
    at: int
    opened: bool
    gauges: tuple[str, str]  # the open-now and oldest-open gauge fields the store sets from the set


@dataclass
class SignalChanges:
    """What one money-signal event moves: counters per event, counters once per key (recording/plan.py
    makes each a "once" check), and a review's state."""

    counters: dict[str, int] = field(default_factory=dict)
    once: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    review: ReviewState | None = None


def signal_changes(event: Event, mode: str) -> SignalChanges:
    """What the event moves if it is a money signal; nothing otherwise."""
    kind, kind_type = event.object_kind, event.type
    changes = SignalChanges()
    counters, once = changes.counters, changes.once
    if kind_type in PAYOUT_EVENTS and kind == "payout":
        payout = payout_of(event.object)
        status = PAYOUT_EVENTS[kind_type]
        counted = {
            fields.field(fam.PAYOUTS, status, payout.currency, mode): 1,
            fields.field(fam.PAYOUT_AMOUNT, status, payout.currency, mode): payout.amount,
        }
        if status == "failed":
            counted[fields.field(fam.PAYOUT_FAILURES, known(payout.failure_code, PAYOUT_FAILURE_CODES), mode)] = 1
        # A payout may be paid, then fail days later: once per payout and status.
        once.append((f"payout:{mode}:{status}:{payout.id}", counted))
    elif kind_type == "charge.dispute.closed" and kind == "dispute":
        dispute = dispute_of(event.object)
        status = _str(event.object, "status", "dispute")
        outcome = status if status in _DISPUTE_OUTCOMES else "other"
        counted = {fields.field(fam.DISPUTES_CLOSED, outcome, mode): 1}
        if outcome == "lost":
            counted[fields.field(fam.DISPUTE_LOST_AMOUNT, dispute.currency, mode)] = dispute.amount
        once.append((f"dpclosed:{mode}:{dispute.id}", counted))
    elif kind_type in DISPUTE_FUNDS_EVENTS and kind == "dispute":
        dispute = dispute_of(event.object)
        movement = DISPUTE_FUNDS_EVENTS[kind_type]
        once.append((f"dpfunds:{mode}:{movement}:{dispute.id}", {
            fields.field(fam.DISPUTE_FUND_MOVEMENTS, movement, mode): 1,
            fields.field(fam.DISPUTE_FUND_AMOUNT, movement, dispute.currency, mode): dispute.amount,
        }))
    elif kind_type == "payment_intent.payment_failed" and kind == "payment_intent":
        # Each failed attempt is its own event (a customer may retry with another card): counted per
        # event. charge.failed may report the same attempt: it stays in the charge families only.
        failure = payment_intent_failure_of(event.object)
        code = known(failure.code, PAYMENT_INTENT_FAILURE_CODES)
        counters[fields.field(fam.PAYMENT_INTENT_FAILURES, code, mode)] = 1
    elif kind_type == "invoice.payment_action_required" and kind == "invoice":
        invoice_of(event.object)  # validated like every invoice event
        counters[fields.field(fam.INVOICES_ACTION_REQUIRED, mode)] = 1
    elif kind_type == "invoice.marked_uncollectible" and kind == "invoice":
        bad = uncollectible_invoice_of(event.object)
        once.append((f"uncollectible:{mode}:{bad.id}", {
            fields.field(fam.INVOICES_UNCOLLECTIBLE, bad.currency, mode): 1,
            fields.field(fam.INVOICE_UNCOLLECTIBLE_AMOUNT, bad.currency, mode): bad.amount,
        }))
    elif kind_type in ("review.opened", "review.closed") and kind == "review":
        review = review_of(event.object)
        opened = kind_type == "review.opened"
        # Opened and closed each counted once per review; the review's state: opened at its created
        # time, or closed (a closed review never reopens, whatever order the two events arrive in).
        if opened:
            reason = known(review.opened_reason, REVIEW_OPENED_REASONS)
            once.append((f"revopen:{mode}:{review.id}", {fields.field(fam.REVIEWS_OPENED, reason, mode): 1}))
        else:
            reason = known(review.closed_reason, REVIEW_CLOSED_REASONS)
            once.append((f"revclose:{mode}:{review.id}", {fields.field(fam.REVIEWS_CLOSED, reason, mode): 1}))
        changes.review = ReviewState(
            key=f"reviews:{mode}", member=review.id, at=review.created if opened else event.created, opened=opened,
            gauges=(fields.field(fam.REVIEWS_OPEN, mode), fields.field(fam.REVIEW_OLDEST_OPEN, mode)),
        )
    return changes
