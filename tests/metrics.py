"""The one way tests read the exporter's /metrics: {(name, labels): value}, by metric name and labels.

A sample a test asks for that is not there is a failure (value() and total() raise, naming the
samples that come close), never 0: a renamed metric or label must not pass a `== 0` check.
"""

import difflib

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from billingwatch.levels import PRIORITY_OF_LEVEL, SEVERITY_OF_PRIORITY

Labels = frozenset[tuple[str, str]]
Figures = dict[tuple[str, Labels], float]
# The Redis server's own figures: they move with whatever else the server holds.
SERVER = ("billingwatch_store_used_memory_bytes", "billingwatch_store_max_memory_bytes",
          "billingwatch_store_evicted_keys")
# Per-replica or timing-dependent families: they differ between two deliveries of the same events.
TIMING = ("billingwatch_webhook_requests", "billingwatch_import_requests", "billingwatch_alert_notifications",
          "billingwatch_detector_errors", "billingwatch_webhook_delivery_lag",
          "billingwatch_build_info", "billingwatch_last_event_received", "billingwatch_store_up", *SERVER)
SUFFIXES = ("", "_total", "_count", "_sum", "_bucket", "_created", "_info")  # sample names of a family


class Samples(Figures):
    """{(name, labels): value}; `families` are the families the exposition declares, with or without samples."""

    families: frozenset[str] = frozenset()


class MissingSample(AssertionError):
    """The sample a test reads is not in the exposition."""


def parse(text: str) -> Samples:
    """BillingWatch's samples in a Prometheus text exposition."""
    families = [f for f in text_string_to_metric_families(text) if f.name.startswith("billingwatch_")]
    samples = Samples({(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples})
    samples.families = frozenset(f.name for f in families)
    return samples


def scrape(source: TestClient | str) -> Samples:
    """/metrics of an in-process app (a TestClient) or of a running exporter (its base URL)."""
    if isinstance(source, str):
        return parse(httpx.get(source + "/metrics", timeout=10).text)
    return parse(source.get("/metrics").text)


def _show(name: str, labels: Labels) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels)) + "}"


def _missing(samples: Figures, name: str, labels: dict[str, str]) -> MissingSample:
    same_name = [_show(n, ls) for n, ls in samples if n == name]
    names = difflib.get_close_matches(name, sorted({n for n, _ in samples}), n=5, cutoff=0.6)
    near = same_name[:20] or names
    return MissingSample(f"no sample {_show(name, frozenset(labels.items()))}; near: {near or 'none'}")


def _account(samples: Figures, name: str, labels: dict[str, str]) -> dict[str, str]:
    """`labels` with account="default" when they name no account and `name`'s samples carry one:
    a test reads the default account unless it names another (BILLINGWATCH_ACCOUNTS_FILE)."""
    if "account" in labels or not any(n == name and any(k == "account" for k, _ in ls) for n, ls in samples):
        return labels
    return {**labels, "account": "default"}


def value(samples: Figures, name: str, **labels: str) -> float:
    """The sample of `name` with exactly these labels (account="default" unless they name one)."""
    labels = _account(samples, name, labels)
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise _missing(samples, name, labels)
    return samples[key]


def _known(samples: Samples, name: str, labels: dict[str, str]) -> None:
    """Fail on a family the exposition does not declare, or a label name none of its samples has."""
    if not any(name == family + suffix for family in samples.families for suffix in SUFFIXES):
        near = difflib.get_close_matches(name, sorted(samples.families), n=5, cutoff=0.6)
        raise MissingSample(f"no family {name} in the exposition; near: {near}")
    names = {k for n, ls in samples if n == name for k, _ in ls}
    if names and not set(labels) <= names:
        raise MissingSample(f"{name} has no label {sorted(set(labels) - names)}; its labels: {sorted(names)}")


def value_or_none(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample of `name` with exactly these labels, or None when the family has no such series
    (yet); a family the exposition does not declare is still a failure."""
    _known(samples, name, labels)
    labels = _account(samples, name, labels)
    return samples.get((name, frozenset(labels.items())))


def gauge_value(samples: Samples, name: str, **labels: str) -> float:
    """A gauge whose series go away at 0 (subscription statuses held, MRR per currency): no series
    reads as 0, but a family the exposition does not declare, or an unknown label name, fails."""
    found = value_or_none(samples, name, **labels)
    return 0.0 if found is None else found


def total(samples: Figures, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (there must be at least one)."""
    matched = _matching(samples, name, labels)
    if not matched:
        raise _missing(samples, name, labels)
    return sum(matched)


def increase(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the samples of `name` whose labels include `labels` grew from `before` to `after`.

    A series not there yet counts from 0 (most are born with their first event), but the family
    must be declared and the label names known, so a misspelt name or label still fails.
    """
    _known(after, name, labels)
    return sum(_matching(after, name, labels)) - sum(_matching(before, name, labels))


def _matching(samples: Figures, name: str, labels: dict[str, str]) -> list[float]:
    want = set(labels.items())
    return [v for (n, ls), v in samples.items() if n == name and want <= ls]


def of_account(samples: Figures, account: str = "default") -> Figures:
    """The samples of one account with the account label dropped, and those of no account (a release
    before BILLINGWATCH_ACCOUNTS_FILE): what an older release exposed, to compare with it."""
    found: Figures = {}
    for (name, labels), sample in samples.items():
        named = dict(labels).get("account")
        if named in (None, account):
            found[(name, frozenset((k, v) for k, v in labels if k != "account"))] = sample
    return found


def in_levels_of_today(samples: Figures) -> Figures:
    """An older release's samples with its anomaly levels (severity critical/high/medium/low) as
    today's exporter shows them: severity critical/warning/info and priority P1..P4."""
    found: Figures = {}
    for (name, labels), sample in samples.items():
        named = dict(labels)
        if "severity" in named and "priority" not in named and named["severity"] in PRIORITY_OF_LEVEL:
            prio = PRIORITY_OF_LEVEL[named["severity"]]
            named.update(severity=SEVERITY_OF_PRIORITY[prio], priority=prio)
        found[(name, frozenset(named.items()))] = sample
    return found


def store_figures(samples: Figures) -> Figures:
    """What an event may change: every BillingWatch sample but the per-request counter (and the Redis
    server's own figures)."""
    return {k: v for k, v in samples.items()
            if not k[0].startswith(("billingwatch_webhook_requests", "billingwatch_import_requests", *SERVER))}


def recorded_figures(source: TestClient | str) -> Figures:
    """What the events themselves determine: every store-held figure except timing ones."""
    return {k: v for k, v in scrape(source).items() if not k[0].startswith(TIMING)}


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


def live_counts(samples: Figures) -> Figures:
    return {k: v for k, v in samples.items() if k[0] in LIVE}


def state_figures(samples: Figures) -> Figures:
    return {k: v for k, v in samples.items() if k[0] in STATE}


def moved(before: Figures, after: Figures) -> Figures:
    """The samples whose value differs (a series born at 0 has not moved); the Redis server's own
    figures (SERVER) are left out: they move with whatever else the server does."""
    return {k: after.get(k, 0.0) for k in before.keys() | after.keys()
            if after.get(k, 0.0) != before.get(k, 0.0) and not k[0].startswith(SERVER)}


def renamed(samples: Figures, old: str, new: str) -> Figures:
    """The samples of family `old`, under the name `new` (to compare history with live counts)."""
    return {(new, labels): v for (name, labels), v in samples.items() if name == old}
