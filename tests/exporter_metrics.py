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
