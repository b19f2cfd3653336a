"""Read a running exporter's /metrics as {(name, labels): value} for the command tests."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# Per-replica or timing-dependent families: they differ between two deliveries of the same events.
TIMING = ("billingwatch_webhook_requests", "billingwatch_webhook_delivery_lag", "billingwatch_build_info",
          "billingwatch_last_event_received", "billingwatch_store_up")


def scrape(base_url: str) -> Samples:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("billingwatch_")
    }


def recorded_figures(base_url: str) -> Samples:
    """What the events themselves determine: every store-held figure except timing ones."""
    return {k: v for k, v in scrape(base_url).items() if not k[0].startswith(TIMING)}


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def anomalies(base_url: str) -> list[dict[str, object]]:
    records: list[dict[str, object]] = httpx.get(base_url + "/api/anomalies?limit=1000", timeout=10).json()["anomalies"]
    return records


# The families that count live traffic, which the rules read: replayed history never moves them.
LIVE = tuple(
    "billingwatch_" + name for name in (
        "events_total", "charges_total", "charge_amount_total", "charge_outcomes_total", "charge_failures_total",
        "refunds_total", "refund_amount_total", "disputes_total", "dispute_amount_total",
        "early_fraud_warnings_total", "invoices_paid_total", "invoice_paid_amount_total",
        "invoice_payment_failures_total", "subscriptions_ended_total", "anomalies_total",
        "webhook_delivery_lag_seconds_bucket", "webhook_delivery_lag_seconds_sum",
        "webhook_delivery_lag_seconds_count", "last_event_received_timestamp_seconds",
    )
)
# State built from events however they arrive: the same after a replay as after live delivery.
STATE = ("billingwatch_subscriptions", "billingwatch_mrr_amount", "billingwatch_subscriptions_lapsed",
         "billingwatch_last_event_created_timestamp_seconds")


def live_counts(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0] in LIVE}


def state_figures(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0] in STATE}


def moved(before: Samples, after: Samples) -> Samples:
    """The samples whose value differs (a series born at 0 has not moved)."""
    return {k: after.get(k, 0.0) for k in before.keys() | after.keys() if after.get(k, 0.0) != before.get(k, 0.0)}


def renamed(samples: Samples, old: str, new: str) -> Samples:
    """The samples of family `old`, under the name `new` (to compare history with live counts)."""
    return {(new, labels): v for (name, labels), v in samples.items() if name == old}
