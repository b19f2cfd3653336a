"""The digest's figures: one period of billing health, read from Prometheus' HTTP API and the
exporter's /api/anomalies.

Counts and amounts over the period are exact: a counter's value at the end minus its value at
the start (store-backed counters never reset when an exporter restarts), or its whole value
when it did not exist at the start (every series starts at 0). `increase()` would extrapolate
to the window's edges (one anomaly shows as 1.5 on a young series), which a report must not.
MRR and its 7-day average come from the rules' recorded series. Money stays per currency.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from billingwatch.config import ConfigError
from billingwatch.metrics.accounts import ACCOUNT_LABEL

# The anomaly log shows this many records per detector; the link has the rest.
RECORDS_PER_DETECTOR = 10


class Unavailable(RuntimeError):
    """Prometheus cannot answer: the digest is not sent (a half-empty digest would mislead)."""


@dataclass(frozen=True)
class Window:
    end: float  # unix seconds
    seconds: int
    livemode: str  # "true" or "false"
    selector: str  # target label matchers, as in the rules config (job="billingwatch")

    @property
    def start(self) -> float:
        return self.end - self.seconds


@dataclass
class Alert:
    labels: dict[str, str]
    active_since: float | None  # the latest activation's time (ALERTS_FOR_STATE), if known
    firing_at_end: bool


@dataclass
class Report:
    window: Window
    charges: dict[str, dict[str, float]] = field(default_factory=dict)  # currency -> status -> count
    charge_amounts: dict[str, dict[str, float]] = field(default_factory=dict)  # currency -> status -> amount
    outcomes: dict[str, float] = field(default_factory=dict)  # status -> count, all currencies
    refunds: dict[str, float] = field(default_factory=dict)  # currency -> refunds created
    refunds_reversed: dict[str, float] = field(default_factory=dict)  # currency -> failed or canceled
    refund_amounts: dict[str, float] = field(default_factory=dict)
    refund_reversed_amounts: dict[str, float] = field(default_factory=dict)
    disputes: float = 0.0
    dispute_amounts: dict[str, float] = field(default_factory=dict)
    early_fraud_warnings: float = 0.0
    mrr: dict[str, float] = field(default_factory=dict)
    mrr_avg7d: dict[str, float] = field(default_factory=dict)
    subscriptions_started: float = 0.0
    subscriptions_ended: float = 0.0
    anomalies: dict[tuple[str, str], float] = field(default_factory=dict)  # (detector, priority) -> count
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # detector -> anomaly records
    alerts: list[Alert] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failure_ratio(self) -> float | None:
        failed, succeeded = self.outcomes.get("failed", 0.0), self.outcomes.get("succeeded", 0.0)
        return failed / (failed + succeeded) if failed + succeeded else None


def exact_increase(metric: str, labels: tuple[str, ...], by: tuple[str, ...], window: Window,
                   matchers: str = "") -> str:
    """PromQL: the counter's increase over the window, exactly (see the module docstring).

    `labels` are the metric's own labels: replicas expose the same store-backed values, so the
    max across them (per job and account) is taken first, as the rules do; the accounts of
    BILLINGWATCH_ACCOUNTS_FILE are then summed: the digest covers them all."""
    match = f'{{{window.selector},livemode="{window.livemode}"{"," + matchers if matchers else ""}}}'
    keep = ", ".join((*labels, ACCOUNT_LABEL, "job"))
    now = f"max by ({keep}) ({metric}{match})"
    then = f"max by ({keep}) ({metric}{match} offset {window.seconds}s)"
    grouping = f" by ({', '.join(by)})" if by else ""
    return f"sum{grouping} (({now} - {then}) >= 0 or {now})"


def recorded(name: str, window: Window) -> str:
    return f'sum by (currency) ({name}{{{window.selector},livemode="{window.livemode}"}})'


class Prometheus:
    def __init__(self, url: str, client: httpx.Client) -> None:
        self.url = url.rstrip("/")
        self.client = client

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        try:
            response = self.client.get(self.url + "/api/v1/query", params={"query": expr, "time": f"{at:.3f}"})
            reply = response.json()
        except httpx.HTTPError as exc:
            raise Unavailable(f"Prometheus at {self.url}: {exc}") from None
        except ValueError:
            raise Unavailable(f"Prometheus at {self.url}: HTTP {response.status_code}, not JSON") from None
        if reply.get("status") != "success":
            raise Unavailable(f"Prometheus at {self.url}: {reply.get('error', 'query failed')}")
        return [(r["metric"], float(r["value"][1])) for r in reply["data"]["result"]]


def _by(rows: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    return {labels.get(label, ""): value for labels, value in rows}


def _by2(rows: list[tuple[dict[str, str], float]], outer: str, inner: str) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, value in rows:
        table[labels.get(outer, "")][labels.get(inner, "")] = value
    return dict(table)


def _total(rows: list[tuple[dict[str, str], float]]) -> float:
    return sum(value for _, value in rows)


def collect(prometheus: Prometheus, window: Window) -> Report:
    report = Report(window)

    def q(expr: str) -> list[tuple[dict[str, str], float]]:
        return prometheus.query(expr, window.end)

    def inc(metric: str, labels: tuple[str, ...], by: tuple[str, ...], matchers: str = "") -> list[
            tuple[dict[str, str], float]]:
        return q(exact_increase(metric, labels, by, window, matchers))

    money = ("currency", "livemode")
    report.charges = _by2(inc("billingwatch_charges_total", ("status", *money), ("currency", "status")),
                          "currency", "status")
    report.charge_amounts = _by2(inc("billingwatch_charge_amount_total", ("status", *money), ("currency", "status")),
                                 "currency", "status")
    report.outcomes = _by(inc("billingwatch_charge_outcomes_total", ("status", "livemode"), ("status",)), "status")
    report.refunds = _by(inc("billingwatch_refunds_total", money, ("currency",)), "currency")
    report.refunds_reversed = _by(inc("billingwatch_refunds_reversed_total", money, ("currency",)), "currency")
    report.refund_amounts = _by(inc("billingwatch_refund_amount_total", money, ("currency",)), "currency")
    report.refund_reversed_amounts = _by(inc("billingwatch_refund_reversed_amount_total", money, ("currency",)),
                                         "currency")
    report.disputes = _total(inc("billingwatch_disputes_total", ("reason", "livemode"), ()))
    report.dispute_amounts = _by(inc("billingwatch_dispute_amount_total", money, ("currency",)), "currency")
    report.early_fraud_warnings = _total(inc("billingwatch_early_fraud_warnings_total", ("fraud_type", "livemode"), ()))
    report.subscriptions_started = _total(inc("billingwatch_events_total", ("type", "livemode"), (),
                                              'type="customer.subscription.created"'))
    report.subscriptions_ended = _total(inc("billingwatch_subscriptions_ended_total", ("livemode",), ()))
    report.anomalies = {(labels.get("detector", ""), labels.get("priority", "")): value for labels, value in inc(
        "billingwatch_anomalies_total", ("detector", "priority", "livemode"), ("detector", "priority"))}
    report.mrr = _by(q(recorded("currency_livemode:billingwatch_mrr_amount:max", window)), "currency")
    report.mrr_avg7d = _by(q(recorded("currency_livemode:billingwatch_mrr_amount:max_avg7d", window)), "currency")
    report.alerts = fired_alerts(q, window)
    return report


Rows = list[tuple[dict[str, str], float]]


def fired_alerts(q: Callable[[str], Rows], window: Window) -> list[Alert]:
    """BillingWatch's alerts (Billing*) firing at any evaluation in the window, of this mode or
    of none (exporter down, store down)."""
    name = 'alertname=~"Billing.*"'
    fired = q(f'max_over_time(ALERTS{{alertstate="firing",{name}}}[{window.seconds}s])')
    at_end = {_key(labels) for labels, _ in q(f'ALERTS{{alertstate="firing",{name}}}')}
    active = q(f"max_over_time(ALERTS_FOR_STATE{{{name}}}[{window.seconds}s])")
    since = {_key(labels): value for labels, value in active}
    alerts = []
    for labels, _ in fired:
        if labels.get("livemode", window.livemode) != window.livemode:
            continue
        key = _key(labels)
        alerts.append(Alert({k: v for k, v in labels.items() if k not in ("__name__", "alertstate")},
                            since.get(key), key in at_end))
    alerts.sort(key=lambda a: (a.labels.get("alertname", ""), sorted(a.labels.items())))
    return alerts


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ("__name__", "alertstate")))


def anomaly_records(client: httpx.Client, exporter_url: str, token: str, window: Window) -> dict[str, list[
        dict[str, Any]]]:
    """The exporter's anomaly records of the window (by the event's Stripe time, whole seconds;
    live traffic, this mode),
    newest first, by detector. Raises Unavailable with a one-line reason."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    url = exporter_url.rstrip("/") + "/api/anomalies"
    try:
        response = client.get(url, params={"limit": "100000", "history": "false"}, headers=headers)
    except httpx.HTTPError as exc:
        raise Unavailable(f"{url}: {exc}") from None
    if response.status_code != 200:
        raise Unavailable(f"{url}: HTTP {response.status_code}")
    try:
        records = response.json()["anomalies"]
    except (ValueError, KeyError, TypeError):
        raise Unavailable(f"{url}: not an anomaly list") from None
    by_detector: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        created = record.get("event_created") if isinstance(record, dict) else None
        if (isinstance(created, int)
                and str(record.get("livemode")).lower() == window.livemode
                and window.start <= created <= window.end):
            by_detector[str(record.get("detector"))].append(record)
    return {d: sorted(rs, key=lambda r: -int(r["event_created"])) for d, rs in by_detector.items()}


def parse_period(text: str) -> int:
    """Seconds in a period such as 24h, 7d, 90m or 3600s."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isascii() or not number.isdigit() or not 0 < int(number) <= 10**6:
        raise ConfigError(f"--period must be a whole number of s, m, h, d or w (24h, 7d), got {text[:20]!r}")
    seconds = int(number) * units[unit]
    if seconds > 366 * 86400:
        raise ConfigError("--period must be at most a year")
    return seconds
