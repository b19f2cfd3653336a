"""Scrape-time metrics built from a store snapshot, so every replica exposes the same figures."""

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from billingwatch.detectors import Detector, severities
from billingwatch.levels import alert_severity, priority
from billingwatch.metrics import families as fam
from billingwatch.metrics import fields
from billingwatch.metrics.labels import (
    CHARGE_STATUSES,
    DECLINE_REASONS,
    DISPUTE_FUND_MOVEMENTS,
    DISPUTE_OUTCOMES,
    DISPUTE_REASONS,
    FRAUD_TYPES,
    INVOICE_ATTEMPTS,
    LIVEMODES,
    MOVEMENT_KINDS,
    OTHER_PLAN,
    PAYMENT_INTENT_FAILURE_CODES,
    PAYOUT_FAILURE_CODES,
    PAYOUT_STATUSES,
    REVIEW_CLOSED_REASONS,
    REVIEW_OPENED_REASONS,
    TRIAL_OUTCOMES,
    VERDICTS,
    event_types,
)
from billingwatch.money import to_major
from billingwatch.store import Snapshot
from billingwatch.store.contract import StoreMemory


def _value(family: fam.Family, labels: list[str], raw: int) -> float:
    if not family.money:
        return float(raw)
    currency = labels[family.labels.index("currency")]
    minor = raw / 1000 if family in fam.MILLI_FAMILIES else raw  # MRR and its kin: thousandths of a minor unit
    return to_major(minor, currency)


# Families with a currency label; once a currency is seen (or configured), each exists in it: the
# counters, and the gauges the revenue rules divide by (MRR itself appears with its first subscription).
_CURRENCY_FAMILIES = (
    *(f for f in fam.REDIS_FAMILIES if "currency" in f.labels and f.kind is fam.Kind.COUNTER),
    fam.PAYING_CUSTOMERS, fam.MRR_BY_PLAN,
)


def _with_other(values: Iterable[str]) -> list[str]:
    return [*sorted(values), "other"]


def _zeros(snapshot: Snapshot, detectors: Iterable[Detector], currencies: Iterable[str] = (),
           plans: Iterable[str] = ()) -> dict[str, int]:
    """Series to expose at 0 before their first increment, so increase() sees that increment."""
    detectors = list(detectors)
    types = _with_other(event_types(d.event_types for d in detectors))  # plugin detectors' types too
    fixed: list[tuple[fam.Family, list[tuple[str, ...]]]] = [
        (fam.EVENTS, [(t,) for t in types]),
        (fam.HISTORY_EVENTS, [(t,) for t in types]),
        (fam.CHARGE_OUTCOMES, [(s,) for s in CHARGE_STATUSES]),
        (fam.CHARGE_FAILURES, [(r,) for r in _with_other(DECLINE_REASONS)]),
        (fam.DISPUTES, [(r,) for r in _with_other(DISPUTE_REASONS)]),
        (fam.EARLY_FRAUD_WARNINGS, [(t,) for t in _with_other(FRAUD_TYPES)]),
        (fam.INVOICE_PAYMENT_FAILURES, [(a,) for a in INVOICE_ATTEMPTS]),
        (fam.ANOMALIES, [(d.name, s) for d in detectors for s in severities(d)]),
        (fam.HISTORY_ANOMALIES, [(d.name, s) for d in detectors for s in severities(d)]),
        (fam.SUBSCRIPTIONS_ENDED, [()]),
        (fam.MISSED_EVENTS, [()]),
        (fam.TRIALS_STARTED, [()]),
        (fam.TRIALS_ENDED, [(o,) for o in TRIAL_OUTCOMES]),
        (fam.QUARANTINED, [(t,) for t in types]),
        (fam.QUARANTINE_DROPPED, [()]),
        (fam.QUARANTINE_ENTRIES, [()]),
        (fam.PAYOUT_FAILURES, [(r,) for r in _with_other(PAYOUT_FAILURE_CODES)]),
        (fam.DISPUTES_CLOSED, [(o,) for o in DISPUTE_OUTCOMES]),
        (fam.DISPUTE_FUND_MOVEMENTS, [(m,) for m in DISPUTE_FUND_MOVEMENTS]),
        (fam.PAYMENT_INTENT_FAILURES, [(c,) for c in _with_other(PAYMENT_INTENT_FAILURE_CODES)]),
        (fam.INVOICES_ACTION_REQUIRED, [()]),
        (fam.REVIEWS_OPENED, [(r,) for r in _with_other(REVIEW_OPENED_REASONS)]),
        (fam.REVIEWS_CLOSED, [(r,) for r in _with_other(REVIEW_CLOSED_REASONS)]),
        (fam.REVIEWS_OPEN, [()]),
        (fam.REVIEW_OLDEST_OPEN, [()]),
    ]
    # Verdicts are counted across modes: the one family without a livemode label.
    zeros: dict[str, int] = {fields.feedback_field(d.name, v): 0 for d in detectors for v in VERDICTS}
    for mode in LIVEMODES:
        for family, label_sets in fixed:
            for labels in label_sets:
                zeros[fields.field(family, *labels, mode)] = 0
    # Currency is open-ended: once one is seen in a mode (or configured), every per-currency
    # family exists in it, so the money ratios have both sides from the start.
    seen = {(c, mode) for c in currencies for mode in LIVEMODES}
    for field in (*snapshot.counters, *snapshot.gauges):
        parsed = fields.parse(field)
        if parsed and "currency" in parsed[0].labels:
            family, values = parsed
            seen.add((values[family.labels.index("currency")], values[-1]))
    # The label before currency, if any, takes every value of its closed set.
    leading = {"status": CHARGE_STATUSES, "kind": MOVEMENT_KINDS, "plan": sorted({*plans, OTHER_PLAN})}
    by_family = {fam.PAYOUTS: PAYOUT_STATUSES, fam.PAYOUT_AMOUNT: PAYOUT_STATUSES,
                 fam.DISPUTE_FUND_AMOUNT: DISPUTE_FUND_MOVEMENTS}  # a leading label of their own
    for currency, mode in seen:
        for family in _CURRENCY_FAMILIES:
            firsts = family.labels[: family.labels.index("currency")]
            for first in by_family.get(family, leading.get(firsts[0], ())) if firsts else ("",):
                labels = (first, currency, mode) if first else (currency, mode)
                zeros[fields.field(family, *labels)] = 0
    return zeros


def _exposed(family: fam.Family, labels: list[str]) -> list[str]:
    """A field's label values as scraped: a stored level (high) as severity and priority (warning, P2)."""
    if family.exposed_labels == family.labels:
        return labels
    at = family.labels.index("severity")
    level = labels[at]
    return [*labels[:at], alert_severity(level), priority(level), *labels[at + 1:]]


def _lag_histograms(counters: dict[str, int]) -> Metric:
    histogram = HistogramMetricFamily(fam.LAG.name, fam.LAG.help, labels=list(fam.LAG.labels))
    for mode in LIVEMODES:  # every bucket exists at 0 from start
        cumulative, buckets = 0, []
        for bound in (*fam.LAG_BUCKETS, float("inf")):
            upper = "+Inf" if bound == float("inf") else repr(bound)
            cumulative += counters.get(fields.field(fam.LAG_BUCKET, upper, mode), 0)
            buckets.append((upper, float(cumulative)))
        total = counters.get(fields.field(fam.LAG_SUM, mode), 0) / 1000
        histogram.add_metric([mode], buckets, total)
    return histogram


def store_metrics(snapshot: Snapshot, detectors: Iterable[Detector], currencies: Iterable[str] = (),
                  plans: Iterable[str] = ()) -> list[Metric]:
    """Every store-held family, with HELP, built from one snapshot; `plans`: the configured plan names."""
    built: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
    for family in fam.REDIS_FAMILIES:
        if family.kind is fam.Kind.COUNTER:
            built[family.key] = CounterMetricFamily(family.name, family.help, labels=list(family.exposed_labels))
        else:
            built[family.key] = GaugeMetricFamily(family.name, family.help, labels=list(family.exposed_labels))
    values = {**_zeros(snapshot, detectors, currencies, plans), **snapshot.counters, **snapshot.gauges}
    for field, raw in sorted(values.items()):
        parsed = fields.parse(field)
        if parsed is None:
            continue
        family, labels = parsed
        if family is fam.SUBSCRIPTIONS and raw == 0:
            continue  # a status no subscription holds any more
        built[family.key].add_metric(_exposed(family, labels), _value(family, labels, raw))
    lapsed = GaugeMetricFamily(fam.SUBSCRIPTIONS_LAPSED.name, fam.SUBSCRIPTIONS_LAPSED.help,
                               labels=list(fam.SUBSCRIPTIONS_LAPSED.labels))
    for mode, count in sorted(snapshot.lapsed.items()):
        lapsed.add_metric([mode], float(count))
    return [*built.values(), _lag_histograms(snapshot.counters), lapsed]


def memory_metrics(memory: StoreMemory | None) -> list[Metric]:
    """Redis's memory figures; each family without a series when there are none (in-process store)."""
    built: list[Metric] = []
    for family, attribute in ((fam.STORE_USED_MEMORY, "used_bytes"), (fam.STORE_MAX_MEMORY, "max_bytes"),
                              (fam.STORE_EVICTED_KEYS, "evicted_keys")):
        gauge = GaugeMetricFamily(family.name, family.help)
        if memory is not None:
            gauge.add_metric([], float(getattr(memory, attribute)))
        built.append(gauge)
    return built


class SnapshotCollector(Collector):
    """Exposes one snapshot: a fresh registry is built per scrape around it."""

    def __init__(
        self, snapshot: Snapshot | None, detectors: Iterable[Detector], currencies: Iterable[str] = (),
        plans: Iterable[str] = (), writable: bool = True,
    ) -> None:
        self._snapshot = snapshot
        self._writable = writable  # False while the store's write gate is closed (store/write_gate.py)
        self._detectors = list(detectors)
        self._currencies = tuple(currencies)
        self._plans = tuple(plans)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(fam.STORE_UP.name, fam.STORE_UP.help)
        up.add_metric([], 1.0 if self._snapshot is not None and self._writable else 0.0)
        yield up
        yield from memory_metrics(self._snapshot.memory if self._snapshot is not None else None)
        if self._snapshot is not None:
            yield from store_metrics(self._snapshot, self._detectors, self._currencies, self._plans)
