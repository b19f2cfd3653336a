"""Scrape-time metrics built from a store snapshot, so every replica exposes the same figures."""

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from billingwatch import families as fam
from billingwatch.detectors import Detector
from billingwatch.ledger import CHARGE_STATUSES, INVOICE_ATTEMPTS
from billingwatch.money import to_major
from billingwatch.store import Snapshot


def _labelled(field: str) -> tuple[fam.Family, list[str]] | None:
    key, *values = field.split("|")
    family = fam.BY_KEY.get(key)
    if family is None or len(values) != len(family.labels):
        return None
    return family, values


def _value(family: fam.Family, labels: list[str], raw: int) -> float:
    if not family.money:
        return float(raw)
    currency = labels[family.labels.index("currency")]
    minor = raw / 1000 if family is fam.MRR else raw  # MRR is held in thousandths of a minor unit
    return to_major(minor, currency)


def _zeros(snapshot: Snapshot, detectors: Iterable[Detector]) -> dict[str, int]:
    """Series to expose at 0 before their first increment, so increase() sees that increment."""
    zeros: dict[str, int] = {}
    for mode in fam.LIVEMODES:
        for d in detectors:
            zeros[fam.field(fam.ANOMALIES, d.name, d.severity, mode)] = 0
        for attempt in INVOICE_ATTEMPTS:
            zeros[fam.field(fam.INVOICE_PAYMENT_FAILURES, attempt, mode)] = 0
        zeros[fam.field(fam.SUBSCRIPTIONS_ENDED, mode)] = 0
        zeros[fam.field(fam.MISSED_EVENTS, mode)] = 0
    # Once a currency is seen, every charge outcome in it exists, so the failure and refund
    # ratios have both sides from the start.
    for field in snapshot.counters:
        parsed = _labelled(field)
        if parsed and parsed[0] in (fam.CHARGES, fam.CHARGE_AMOUNT):
            _, currency, mode = parsed[1]
            for status in CHARGE_STATUSES:
                zeros[fam.field(fam.CHARGES, status, currency, mode)] = 0
                zeros[fam.field(fam.CHARGE_AMOUNT, status, currency, mode)] = 0
            for family in (fam.REFUNDS, fam.REFUND_AMOUNT, fam.DISPUTE_AMOUNT):
                zeros[fam.field(family, currency, mode)] = 0
    return zeros


def _lag_histograms(counters: dict[str, int]) -> Metric:
    histogram = HistogramMetricFamily(fam.LAG_NAME, fam.LAG_HELP, labels=["livemode"])
    for mode in fam.LIVEMODES:
        count = counters.get(fam.field(fam.LAG_COUNT, mode))
        if count is None:
            continue
        cumulative, buckets = 0, []
        for bound in (*fam.LAG_BUCKETS, float("inf")):
            upper = "+Inf" if bound == float("inf") else repr(bound)
            cumulative += counters.get(fam.field(fam.LAG_BUCKET, upper, mode), 0)
            buckets.append((upper, float(cumulative)))
        total = counters.get(fam.field(fam.LAG_SUM, mode), 0) / 1000
        histogram.add_metric([mode], buckets, total)
    return histogram


def store_metrics(snapshot: Snapshot, detectors: Iterable[Detector]) -> list[Metric]:
    """Every store-held family, with HELP, built from one snapshot."""
    built: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
    for family in fam.REDIS_FAMILIES:
        if family.kind is fam.Kind.COUNTER:
            built[family.key] = CounterMetricFamily(family.name, family.help, labels=list(family.labels))
        else:
            built[family.key] = GaugeMetricFamily(family.name, family.help, labels=list(family.labels))
    values = {**_zeros(snapshot, detectors), **snapshot.counters, **snapshot.gauges}
    for field, raw in sorted(values.items()):
        parsed = _labelled(field)
        if parsed is None:
            continue
        family, labels = parsed
        if family is fam.SUBSCRIPTIONS and raw == 0:
            continue  # a status no subscription holds any more
        built[family.key].add_metric(labels, _value(family, labels, raw))
    lapsed = GaugeMetricFamily(
        "billingwatch_subscriptions_lapsed",
        "Active subscriptions whose period ended more than the grace period ago with no paid invoice since.",
        labels=["livemode"],
    )
    for mode, count in sorted(snapshot.lapsed.items()):
        lapsed.add_metric([mode], float(count))
    return [*built.values(), _lag_histograms(snapshot.counters), lapsed]


class SnapshotCollector(Collector):
    """Exposes one snapshot: a fresh registry is built per scrape around it."""

    def __init__(self, snapshot: Snapshot | None, detectors: Iterable[Detector]) -> None:
        self._snapshot = snapshot
        self._detectors = list(detectors)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("billingwatch_store_up", "1 when the store answered this scrape, else 0.")
        up.add_metric([], 0.0 if self._snapshot is None else 1.0)
        yield up
        if self._snapshot is not None:
            yield from store_metrics(self._snapshot, self._detectors)
