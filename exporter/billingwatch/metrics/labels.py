"""The closed label vocabularies: every label value a metric can take comes from here.

Values outside a set become "other" (known()), so every label has a small, known set and the
zero series (metrics/collector.py) can be listed before the first event.
"""

from collections.abc import Iterable

LIVEMODES = ("true", "false")


def livemode_label(livemode: bool) -> str:
    """The one spelling of livemode, in labels, store keys and detector state alike."""
    return "true" if livemode else "false"


def known(value: str | None, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


# Subscription statuses held in the subscriptions gauge; the ended ones are not held, and only
# the MRR ones count in MRR.
LIVE_STATUSES = ("trialing", "active", "past_due", "unpaid", "paused", "incomplete")
ENDED_STATUSES = ("canceled", "incomplete_expired")
MRR_STATUSES = ("active", "past_due")
# billingwatch_mrr_movement_amount_total{kind} and billingwatch_customer_movements_total{kind}: how a
# customer's MRR in a currency changed (docs/revenue.md).
MOVEMENT_KINDS = ("new", "expansion", "contraction", "churn", "reactivation")
# billingwatch_trials_ended_total{outcome}: how a trial ended.
TRIAL_OUTCOMES = ("converted", "expired")
# billingwatch_mrr_by_plan_amount{plan}: items no configured plan names (BILLINGWATCH_PLANS).
OTHER_PLAN = "other"

DECLINE_REASONS = frozenset(
    """
    authentication_required approve_with_id call_issuer card_not_supported card_velocity_exceeded
    card_declined currency_not_supported do_not_honor do_not_try_again expired_card fraudulent
    generic_decline highest_risk_level elevated_risk_level incorrect_cvc incorrect_number
    incorrect_zip insufficient_funds invalid_account invalid_amount invalid_cvc invalid_expiry_month
    invalid_expiry_year invalid_number issuer_not_available lost_card merchant_blacklist
    not_permitted pickup_card processing_error restricted_card revocation_of_authorization
    rule security_violation service_not_allowed stolen_card stop_payment_order
    testmode_decline transaction_not_allowed try_again_later withdrawal_count_limit_exceeded
    low_probability_of_authorization
    """.split()
)
DISPUTE_REASONS = frozenset(
    """
    bank_cannot_process check_returned credit_not_processed customer_initiated debit_not_authorized
    duplicate fraudulent general incorrect_account_details insufficient_funds noncompliant
    product_not_received product_unacceptable subscription_canceled unrecognized
    """.split()
)
FRAUD_TYPES = frozenset(
    """
    card_never_received fraudulent_card_application made_with_counterfeit_card
    made_with_lost_card made_with_stolen_card misc unauthorized_use_of_card
    """.split()
)
INVOICE_ATTEMPTS = ("1", "2", "3", "4+")
# billingwatch_payouts_total{status}: the payout events read, by the status each reports.
PAYOUT_EVENTS = {"payout.paid": "paid", "payout.failed": "failed", "payout.canceled": "canceled"}
PAYOUT_STATUSES = tuple(PAYOUT_EVENTS.values())
# billingwatch_payout_failures_total{reason}: Stripe's payout failure codes
# (https://docs.stripe.com/payouts#payout-failures), else other.
PAYOUT_FAILURE_CODES = frozenset(
    """
    account_closed account_frozen bank_account_restricted bank_ownership_changed could_not_process
    debit_not_authorized declined incorrect_account_holder_address incorrect_account_holder_name
    incorrect_account_holder_tax_id insufficient_funds invalid_account_number invalid_currency
    no_account unsupported_card
    """.split()
)
# billingwatch_disputes_closed_total{outcome}: a closed dispute's status (warning_closed: an
# inquiry closed without becoming a chargeback), else other.
DISPUTE_OUTCOMES = ("won", "lost", "warning_closed", "other")
# billingwatch_dispute_funds_total{movement}: charge.dispute.funds_withdrawn / funds_reinstated.
DISPUTE_FUNDS_EVENTS = {
    "charge.dispute.funds_withdrawn": "withdrawn", "charge.dispute.funds_reinstated": "reinstated",
}
DISPUTE_FUND_MOVEMENTS = tuple(DISPUTE_FUNDS_EVENTS.values())
# billingwatch_payment_intent_failures_total{code}: last_payment_error.code classes.
PAYMENT_INTENT_FAILURE_CODES = frozenset({"authentication_required", "card_declined", "processing_error"})
# billingwatch_reviews_opened_total{reason} / _closed_total{reason}: Radar review reasons.
REVIEW_OPENED_REASONS = frozenset({"rule", "manual"})
REVIEW_CLOSED_REASONS = frozenset(
    {"approved", "refunded", "refunded_as_fraud", "disputed", "redacted", "canceled", "payment_never_settled",
     "acknowledged"}
)

# The Stripe event types the counters read, by what recording/plan.py does with them.
CHARGE_EVENTS = {"charge.succeeded": "succeeded", "charge.failed": "failed", "charge.pending": "pending"}
CHARGE_STATUSES = tuple(CHARGE_EVENTS.values())
INVOICE_PAID_EVENTS = frozenset({"invoice.paid", "invoice.payment_succeeded"})
REFUND_EVENTS = frozenset({"refund.created", "charge.refund.updated", "refund.updated", "refund.failed"})
SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
        "customer.subscription.paused", "customer.subscription.resumed",
        "customer.subscription.pending_update_applied", "customer.subscription.pending_update_expired",
        "customer.subscription.trial_will_end",
    }
)
# Read by the built-in detectors only (tests/test_history.py keeps every type they read here, so
# the README's list of types to subscribe to stays whole); plugin detectors' types join at start-up.
DETECTOR_EVENTS = frozenset(
    {
        "charge.succeeded", "payment_intent.succeeded", "invoice.created", "invoice.finalized",
        "invoice.updated", "invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed",
        "invoice.upcoming", "credit_note.created",
    }
)
# The money signals of docs/events.md (payouts, dispute outcomes, PaymentIntent failures, reviews,
# bad debt): each read by recording/signals.py.
SIGNAL_EVENTS = frozenset(
    {
        *PAYOUT_EVENTS, "charge.dispute.closed", *DISPUTE_FUNDS_EVENTS, "payment_intent.payment_failed",
        "invoice.payment_action_required", "review.opened", "review.closed", "invoice.marked_uncollectible",
    }
)
# The Stripe event types BillingWatch itself reads (README lists those to subscribe to).
EVENT_TYPES = frozenset(
    {
        *CHARGE_EVENTS, "charge.refunded", *REFUND_EVENTS, "charge.dispute.created",
        "radar.early_fraud_warning.created", *INVOICE_PAID_EVENTS, "invoice.payment_failed",
        *SUBSCRIPTION_EVENTS, *DETECTOR_EVENTS, *SIGNAL_EVENTS,
    }
)


def event_types(detector_event_types: Iterable[frozenset[str]]) -> frozenset[str]:
    """The `type` label's values besides "other": ours and those the loaded detectors read
    (plugins too). Fixed at start-up, so a new Stripe type never adds a series."""
    return EVENT_TYPES.union(*detector_event_types)


def event_type_label(event_type: str, detector_event_types: Iterable[frozenset[str]]) -> str:
    """known(event_type, event_types(...)), without building the union for every event."""
    if event_type in EVENT_TYPES or any(event_type in types for types in detector_event_types):
        return event_type
    return "other"


# billingwatch_webhook_requests_total{result}: what the webhook answered.
# billingwatch_import_requests_total{result}: what POST /api/import answered (http/import_api.py).
IMPORT_RESULTS = (
    "imported", "unauthorized", "unsupported_media_type", "too_large", "body_timeout", "disconnected",
    "store_unavailable",
)
# What became of an alert pushed to Alertmanager (notify/alertmanager.py), once per Alertmanager.
NOTIFICATION_RESULTS = ("sent", "failed", "dropped")
# A person's verdict on an anomaly (the feedback buttons of /anomalies/<id>).
VERDICTS = ("expected", "false_positive")
RESULTS = (
    "accepted", "duplicate", "missing_signature", "invalid_signature", "too_large", "invalid_json",
    "invalid_event", "livemode_rejected", "store_unavailable", "unrecordable", "replay_unauthorized",
    "body_timeout", "unsupported_media_type", "quarantined",
    "wrong_account",  # signed with the secret of another account in BILLINGWATCH_ACCOUNTS_FILE
)
