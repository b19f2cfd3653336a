"""The metric catalogue: every family BillingWatch exposes, with its name, HELP, labels and kind.

Most live in the store (REDIS_FAMILIES, named there as metrics/fields.py says); the rest are
built per scrape (store up, lapsed subscriptions, build info) or per replica (webhook requests).
Label values come from metrics/labels.py.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from prometheus_client import Counter

from billingwatch.metrics.labels import IMPORT_RESULTS, NOTIFICATION_RESULTS, RESULTS


class Kind(Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Family:
    key: str  # short name used in store fields; "" for a family the store does not hold
    name: str  # Prometheus name without the _total suffix of counters
    help: str
    labels: tuple[str, ...]
    kind: Kind
    money: bool = False  # stored in minor units (milli-minor units: MILLI_FAMILIES), exposed in major units

    @property
    def exposed_labels(self) -> tuple[str, ...]:
        """The labels as scraped: an anomaly family's stored level is shown as severity and priority."""
        if "severity" not in self.labels:
            return self.labels
        at = self.labels.index("severity")
        return (*self.labels[: at + 1], "priority", *self.labels[at + 1:])


def _counter(key: str, name: str, help: str, *labels: str, money: bool = False) -> Family:
    return Family(key, name, help, labels, Kind.COUNTER, money)


def _gauge(key: str, name: str, help: str, *labels: str, money: bool = False) -> Family:
    return Family(key, name, help, labels, Kind.GAUGE, money)


EVENTS = _counter(
    "ev", "billingwatch_events", "Distinct Stripe events delivered live, by type (types not read: other).",
    "type", "livemode",
)
HISTORY_EVENTS = _counter(
    "hev", "billingwatch_history_events",
    "Distinct Stripe events imported as history (replay, backfill, reconcile --replay), by type.",
    "type", "livemode",
)
CHARGES = _counter(
    "ch", "billingwatch_charges", "Charges by outcome (charge.succeeded/failed/pending events).",
    "status", "currency", "livemode",
)
CHARGE_OUTCOMES = _counter(
    "cho", "billingwatch_charge_outcomes", "Charges by outcome across all currencies.", "status", "livemode",
)
CHARGE_AMOUNT = _counter(
    "cha", "billingwatch_charge_amount", "Charged amount by outcome, in major units of the currency.",
    "status", "currency", "livemode", money=True,
)
CHARGE_FAILURES = _counter(
    "chf", "billingwatch_charge_failures", "Failed charges by decline reason (known codes, else other).",
    "reason", "livemode",
)
REFUNDS = _counter("rf", "billingwatch_refunds", "Refunds created, once per refund.", "currency", "livemode")
REFUND_AMOUNT = _counter(
    "rfa", "billingwatch_refund_amount", "Refunded amount, in major units of the currency.",
    "currency", "livemode", money=True,
)
REFUNDS_REVERSED = _counter(
    "rfr", "billingwatch_refunds_reversed",
    "Refunds that failed or were canceled, once per refund: refunds_total minus this is what stands.",
    "currency", "livemode",
)
REFUND_REVERSED_AMOUNT = _counter(
    "rfra", "billingwatch_refund_reversed_amount",
    "Amount of refunds that failed or were canceled, in major units of the currency.",
    "currency", "livemode", money=True,
)
DISPUTES = _counter(
    "dp", "billingwatch_disputes", "Disputes opened (charge.dispute.created), by reason.",
    "reason", "livemode",
)
DISPUTE_AMOUNT = _counter(
    "dpa", "billingwatch_dispute_amount", "Disputed amount, in major units of the currency.",
    "currency", "livemode", money=True,
)
EARLY_FRAUD_WARNINGS = _counter(
    "efw", "billingwatch_early_fraud_warnings", "Radar early fraud warnings, by fraud type.",
    "fraud_type", "livemode",
)
INVOICES_PAID = _counter(
    "ip", "billingwatch_invoices_paid", "Invoices paid, once per invoice.", "currency", "livemode"
)
INVOICE_PAID_AMOUNT = _counter(
    "ipa", "billingwatch_invoice_paid_amount", "Amount paid on invoices, in major units of the currency.",
    "currency", "livemode", money=True,
)
INVOICE_PAYMENT_FAILURES = _counter(
    "ipf", "billingwatch_invoice_payment_failures",
    "Failed invoice payment attempts (invoice.payment_failed), by attempt number 1, 2, 3 or 4+.",
    "attempt", "livemode",
)
SUBSCRIPTIONS_ENDED = _counter(
    "se", "billingwatch_subscriptions_ended", "Subscriptions that reached canceled or incomplete_expired.",
    "livemode",
)
ANOMALIES = _counter(
    "an", "billingwatch_anomalies",
    "Anomalies found by the stateful detectors, by severity (critical, warning, info) and priority (P1-P4); "
    "details at /anomalies.",
    "detector", "severity", "livemode",
)
HISTORY_ANOMALIES = _counter(
    "han", "billingwatch_history_anomalies",
    "Anomalies found in imported history (not live traffic), by severity and priority; details at "
    "/api/anomalies?history=true.",
    "detector", "severity", "livemode",
)
# No livemode label: a verdict is a person's, counted per detector across modes.
ANOMALY_FEEDBACK = _counter(
    "fb", "billingwatch_anomaly_feedback",
    "Verdicts people gave on anomalies at /anomalies (expected or false_positive); a changed verdict counts "
    "again, under the new one; repeating the current one counts nothing.",
    "detector", "verdict",
)
MISSED_EVENTS = _counter(
    "me", "billingwatch_missed_events",
    "Events Stripe's API reports that never arrived as webhooks (found by billingwatch reconcile).",
    "livemode",
)
LAST_RECEIVED = _gauge(
    "lr", "billingwatch_last_event_received_timestamp_seconds",
    "Unix time at which the newest distinct event was received.", "livemode",
)
LAST_CREATED = _gauge(
    "lc", "billingwatch_last_event_created_timestamp_seconds",
    "Largest Stripe created time of the recorded events.", "livemode",
)
SUBSCRIPTIONS = _gauge(
    "sub", "billingwatch_subscriptions",
    "Live subscriptions by status (canceled and incomplete_expired are not held).", "status", "livemode",
)
MRR = _gauge(
    "mrr", "billingwatch_mrr_amount",
    "Monthly recurring revenue of active and past_due subscriptions, in major units of the currency.",
    "currency", "livemode", money=True,
)
MRR_MOVEMENT_AMOUNT = _counter(
    "mva", "billingwatch_mrr_movement_amount",
    "MRR moved by kind (new, expansion, contraction, churn, reactivation), each a positive amount in major "
    "units of the currency: net new MRR is new + expansion + reactivation - contraction - churn.",
    "kind", "currency", "livemode", money=True,
)
CUSTOMER_MOVEMENTS = _counter(
    "mvc", "billingwatch_customer_movements",
    "Customers whose MRR in the currency moved, by kind (kind=churn: churned customers).",
    "kind", "currency", "livemode",
)
PAYING_CUSTOMERS = _gauge(
    "pay", "billingwatch_paying_customers", "Customers whose MRR in the currency is above 0.",
    "currency", "livemode",
)
MRR_BY_PLAN = _gauge(
    "mrrp", "billingwatch_mrr_by_plan_amount",
    "MRR by plan (BILLINGWATCH_PLANS; unmapped items: other), in major units of the currency; the sum over "
    "plans is billingwatch_mrr_amount.",
    "plan", "currency", "livemode", money=True,
)
TRIALS_STARTED = _counter(
    "trs", "billingwatch_trials_started", "Subscription trials started, once per subscription.", "livemode",
)
TRIALS_ENDED = _counter(
    "tre", "billingwatch_trials_ended",
    "Subscription trials ended, once per subscription, by outcome (converted: became active; expired: "
    "canceled, incomplete_expired or paused).",
    "outcome", "livemode",
)
QUARANTINED = _counter(
    "qe", "billingwatch_events_quarantined",
    "Signed Stripe events this version could not record, kept in the quarantine (/api/quarantine) "
    "for `billingwatch requeue`, by type.",
    "type", "livemode",
)
QUARANTINE_DROPPED = _counter(
    "qd", "billingwatch_events_quarantine_dropped",
    "Quarantined events dropped, oldest first, to keep the quarantine within BILLINGWATCH_QUARANTINE_SIZE.",
    "livemode",
)
QUARANTINE_ENTRIES = _gauge(
    "qn", "billingwatch_events_quarantine_entries", "Events waiting in the quarantine.", "livemode",
)

# The money signals (recording/signals.py, docs/events.md#money-signals).
PAYOUTS = _counter(
    "po", "billingwatch_payouts", "Payouts by the status an event reported (payout.paid/failed/canceled), once "
    "per payout and status.",
    "status", "currency", "livemode",
)
PAYOUT_AMOUNT = _counter(
    "poa", "billingwatch_payout_amount", "Payout amount by status, in major units of the currency.",
    "status", "currency", "livemode", money=True,
)
PAYOUT_FAILURES = _counter(
    "pof", "billingwatch_payout_failures", "Failed payouts by failure code (Stripe's codes, else other).",
    "reason", "livemode",
)
DISPUTES_CLOSED = _counter(
    "dpc", "billingwatch_disputes_closed",
    "Disputes closed (charge.dispute.closed), once per dispute, by outcome: won, lost, warning_closed "
    "(an inquiry that never became a chargeback) or other.",
    "outcome", "livemode",
)
DISPUTE_LOST_AMOUNT = _counter(
    "dpl", "billingwatch_dispute_lost_amount", "Amount of disputes closed as lost, in major units of the currency.",
    "currency", "livemode", money=True,
)
DISPUTE_FUND_MOVEMENTS = _counter(
    "dpf", "billingwatch_dispute_fund_movements",
    "Dispute funds withdrawn from or reinstated to the balance, once per dispute and movement.",
    "movement", "livemode",
)
DISPUTE_FUND_AMOUNT = _counter(
    "dpfa", "billingwatch_dispute_fund_amount",
    "Dispute funds withdrawn or reinstated, in major units of the currency.",
    "movement", "currency", "livemode", money=True,
)
PAYMENT_INTENT_FAILURES = _counter(
    "pif", "billingwatch_payment_intent_failures",
    "Failed PaymentIntent attempts (payment_intent.payment_failed), by last_payment_error.code class: "
    "authentication_required (3-D Secure), card_declined, processing_error or other. Never in the charge families.",
    "code", "livemode",
)
INVOICES_ACTION_REQUIRED = _counter(
    "iar", "billingwatch_invoices_action_required",
    "Invoice payments that need the customer's action, such as 3-D Secure (invoice.payment_action_required).",
    "livemode",
)
REVIEWS_OPENED = _counter(
    "rvo", "billingwatch_reviews_opened", "Radar reviews opened, once per review, by reason (rule, manual).",
    "reason", "livemode",
)
REVIEWS_CLOSED = _counter(
    "rvc", "billingwatch_reviews_closed", "Radar reviews closed, once per review, by closed reason.",
    "reason", "livemode",
)
REVIEWS_OPEN = _gauge(
    "rvn", "billingwatch_reviews_open", "Radar reviews opened here and not closed yet.", "livemode",
)
REVIEW_OLDEST_OPEN = _gauge(
    "rvt", "billingwatch_review_oldest_open_timestamp_seconds",
    "Unix time at which the oldest Radar review still open was opened; 0 when none is open.", "livemode",
)
INVOICES_UNCOLLECTIBLE = _counter(
    "iu", "billingwatch_invoices_uncollectible", "Invoices marked uncollectible, once per invoice.",
    "currency", "livemode",
)
INVOICE_UNCOLLECTIBLE_AMOUNT = _counter(
    "iua", "billingwatch_invoice_uncollectible_amount",
    "Amount left unpaid on invoices marked uncollectible (bad debt), in major units of the currency.",
    "currency", "livemode", money=True,
)
SIGNAL_FAMILIES = (
    PAYOUTS, PAYOUT_AMOUNT, PAYOUT_FAILURES, DISPUTES_CLOSED, DISPUTE_LOST_AMOUNT, DISPUTE_FUND_MOVEMENTS,
    DISPUTE_FUND_AMOUNT, PAYMENT_INTENT_FAILURES, INVOICES_ACTION_REQUIRED, REVIEWS_OPENED, REVIEWS_CLOSED,
    REVIEWS_OPEN, REVIEW_OLDEST_OPEN, INVOICES_UNCOLLECTIBLE, INVOICE_UNCOLLECTIBLE_AMOUNT,
)

REDIS_FAMILIES = (
    EVENTS, HISTORY_EVENTS, CHARGES, CHARGE_OUTCOMES, CHARGE_AMOUNT, CHARGE_FAILURES, REFUNDS, REFUND_AMOUNT,
    REFUNDS_REVERSED, REFUND_REVERSED_AMOUNT,
    DISPUTES, DISPUTE_AMOUNT, EARLY_FRAUD_WARNINGS, INVOICES_PAID, INVOICE_PAID_AMOUNT,
    INVOICE_PAYMENT_FAILURES, SUBSCRIPTIONS_ENDED, ANOMALIES, HISTORY_ANOMALIES, ANOMALY_FEEDBACK, MISSED_EVENTS,
    LAST_RECEIVED, LAST_CREATED, SUBSCRIPTIONS, MRR, MRR_MOVEMENT_AMOUNT, CUSTOMER_MOVEMENTS, PAYING_CUSTOMERS,
    MRR_BY_PLAN, TRIALS_STARTED, TRIALS_ENDED, QUARANTINED, QUARANTINE_DROPPED, QUARANTINE_ENTRIES,
    *SIGNAL_FAMILIES,
)
# Held in thousandths of a minor unit, so monthly amounts of yearly prices stay exact integers.
MILLI_FAMILIES = (MRR, MRR_MOVEMENT_AMOUNT, MRR_BY_PLAN)
# The delivery-lag histogram is stored as per-bucket counts (non-cumulative), a sum in
# milliseconds and a count; the collector makes the buckets cumulative.
LAG_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0, 86400.0)
LAG_NAME = "billingwatch_webhook_delivery_lag_seconds"
LAG_HELP = "Seconds from the event's Stripe created time to its first recording here."
LAG_BUCKET = _counter("lagb", LAG_NAME, LAG_HELP, "le", "livemode")
LAG_SUM = _counter("lags", LAG_NAME, LAG_HELP, "livemode")  # milliseconds
LAG_COUNT = _counter("lagc", LAG_NAME, LAG_HELP, "livemode")

# Built at scrape time, not held in the store.
STORE_UP = _gauge(
    "", "billingwatch_store_up",
    "1 when the store answered this scrape and takes writes, else 0 (/ready says why: unreachable, full, "
    "read-only, ...).",
)
# Redis's own figures (INFO memory and stats), read at scrape time; no series with the in-process store.
STORE_USED_MEMORY = _gauge(
    "", "billingwatch_store_used_memory_bytes", "Memory the Redis server uses (INFO memory used_memory), in bytes.",
)
STORE_MAX_MEMORY = _gauge(
    "", "billingwatch_store_max_memory_bytes",
    "The Redis server's maxmemory, in bytes: above it Redis refuses writes (webhooks get 503); 0: no limit.",
)
STORE_EVICTED_KEYS = _gauge(
    "", "billingwatch_store_evicted_keys",
    "Keys the Redis server has evicted since it started (INFO stats evicted_keys); above 0, a redelivered "
    "event may have counted twice (maxmemory-policy must be noeviction).",
)
SUBSCRIPTIONS_LAPSED = _gauge(
    "", "billingwatch_subscriptions_lapsed",
    "Active subscriptions whose period ended more than the grace period ago with no paid invoice since.",
    "livemode",
)
LAG = Family("", LAG_NAME, LAG_HELP, ("livemode",), Kind.HISTOGRAM)
BUILD_INFO = _gauge(
    "", "billingwatch_build_info", "Always 1; the labels tell the version and the store in use.",
    "version", "python_version", "store",
)
# Counted by each replica's webhook (not in the store): what it answered, by result.
WEBHOOK_REQUESTS = _counter(
    "", "billingwatch_webhook_requests", "Webhook requests handled by this replica, by result.", "result",
)
# Counted by each replica's POST /api/import: what it answered, by result (the lines it recorded
# count in the history families; invalid lines are listed in its reply).
IMPORT_REQUESTS = _counter(
    "", "billingwatch_import_requests",
    "POST /api/import requests handled by this replica, by result (imported: answered 200).", "result",
)
# Counted by each replica's alert sender: live anomalies pushed to Alertmanager, per Alertmanager.
ALERT_NOTIFICATIONS = _counter(
    "", "billingwatch_alert_notifications",
    "Live anomalies pushed to Alertmanager by this replica, per Alertmanager: sent, failed (after the "
    "retries) or dropped (queue full).",
    "result",
)

# Every family, as the README's metrics table lists them.
DETECTOR_ERRORS = _counter(
    "", "billingwatch_detector_errors",
    "Events on which a detector raised an error (a bug in it, often a plugin), per replica: the event "
    "was recorded without that detector's checks.",
    "detector",
)

CATALOGUE = (
    STORE_UP, STORE_USED_MEMORY, STORE_MAX_MEMORY, STORE_EVICTED_KEYS, WEBHOOK_REQUESTS, ALERT_NOTIFICATIONS,
    IMPORT_REQUESTS, DETECTOR_ERRORS, BUILD_INFO, *REDIS_FAMILIES, LAG,
    SUBSCRIPTIONS_LAPSED,
)


def new_requests_counter() -> Counter:
    """The webhook request counter, every result at 0 from the start."""
    counter = Counter(WEBHOOK_REQUESTS.name, WEBHOOK_REQUESTS.help, list(WEBHOOK_REQUESTS.labels), registry=None)
    for result in RESULTS:
        counter.labels(result)
    return counter


def new_import_requests_counter() -> Counter:
    """The /api/import request counter, every result at 0 from the start."""
    counter = Counter(IMPORT_REQUESTS.name, IMPORT_REQUESTS.help, list(IMPORT_REQUESTS.labels), registry=None)
    for result in IMPORT_RESULTS:
        counter.labels(result)
    return counter


def new_alert_notifications_counter() -> Counter:
    """The pushed-alert counter, every result at 0 from the start (pushing on or off)."""
    counter = Counter(ALERT_NOTIFICATIONS.name, ALERT_NOTIFICATIONS.help, list(ALERT_NOTIFICATIONS.labels),
                      registry=None)
    for result in NOTIFICATION_RESULTS:
        counter.labels(result)
    return counter


def new_detector_errors_counter(detector_names: Iterable[str]) -> Counter:
    """The detector-error counter, every loaded detector at 0 from the start."""
    counter = Counter(DETECTOR_ERRORS.name, DETECTOR_ERRORS.help, list(DETECTOR_ERRORS.labels), registry=None)
    for name in detector_names:
        counter.labels(name)
    return counter
