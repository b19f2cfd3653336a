"""Render the Prometheus recording and alerting rules from a RulesConfig.

Aggregation rules, the same in every query:
- The store-backed figures are global: every replica exposes the same value, so replicas are
  folded with `max by (<the metric's own labels>)`, never summed; one replica or three give
  the same answer, whatever labels tell the replicas apart (instance, pod, ...).
- rate()/increase() are taken per series before any aggregation, so a counter reset (an
  exporter restart with the in-process store) neither fires nor masks an alert.
- Counts may be summed across currencies; money never is. Count-based alerts read the
  currency-free families (billingwatch_charge_outcomes_total, billingwatch_disputes_total),
  which exist at 0 from the exporter's start, so increase() sees the first event of a new
  currency too.
- An alert comparing with an average over a baseline waits until that baseline is whole
  (`covered`): no alert from a half-filled average during warm-up or after a long gap.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from billingwatch.rules.config import RulesConfig, seconds


@dataclass(frozen=True)
class Rules:
    """Recording rules (each name once, in dependency order) followed by alerting rules."""

    config: RulesConfig
    records: dict[str, str]
    alerts: list[dict[str, Any]]

    def record(self, name: str, expr: str) -> str:
        if self.records.setdefault(name, expr) != expr:  # pragma: no cover - a programming error
            raise ValueError(f"recording rule {name} defined twice with different expressions")
        return name

    def by(self, *labels: str) -> str:
        """A label list: `labels` plus the labels kept across replicas."""
        return ", ".join(dict.fromkeys([*labels, *kept_labels(self.config)]))


def kept_labels(config: RulesConfig) -> list[str]:
    """Labels kept in every aggregation: the selector's equality-matched labels (constant within
    one deployment, so keeping them only tells deployments apart) and `keep_labels`."""
    pinned = re.findall(r'([a-zA-Z_]\w*)\s*=\s*"', config.selector)
    return list(dict.fromkeys([*pinned, *config.keep_labels]))


# --- recording rules: each helper registers what it needs and returns the series name ---


def charges(r: Rules, window: str) -> str:
    """Charges by status, currency and mode over `window`."""
    c = r.config
    return r.record(
        f"currency_livemode_status:billingwatch_charges:increase{window}",
        f"max by ({r.by('status', 'currency', 'livemode')}) "
        f"(increase(billingwatch_charges_total{c.matchers()}[{window}]))",
    )


def charge_outcomes(r: Rules, window: str) -> str:
    """Charges by status and mode over `window`, all currencies (a count; exists from start)."""
    c = r.config
    return r.record(
        f"livemode_status:billingwatch_charge_outcomes:increase{window}",
        f"max by ({r.by('status', 'livemode')}) "
        f"(increase(billingwatch_charge_outcomes_total{c.matchers()}[{window}]))",
    )


def charge_amount(r: Rules, window: str) -> str:
    c = r.config
    return r.record(
        f"currency_livemode_status:billingwatch_charge_amount:increase{window}",
        f"max by ({r.by('status', 'currency', 'livemode')}) "
        f"(increase(billingwatch_charge_amount_total{c.matchers()}[{window}]))",
    )


def averaged(r: Rules, series: str, baseline: str) -> str:
    """The average of a recorded series over `baseline`: cheap, it reads recorded samples only."""
    return r.record(f"{series}_avg{baseline}", f"avg_over_time({series}[{baseline}])")


def by_mode(r: Rules, metric: str, labels: tuple[str, ...], window: str) -> str:
    """A counter's increase over `window` summed over `labels` (counts, never money) per mode."""
    c = r.config
    name = metric.removesuffix("_total")
    return r.record(
        f"livemode:{name}:increase{window}",
        f"sum by ({r.by('livemode')}) (max by ({r.by(*labels, 'livemode')}) "
        f"(increase({metric}{c.matchers()}[{window}])))",
    )


def duration(total: float) -> str:
    """Seconds as a Prometheus duration: duration(8 * 86400) == "8d", duration(5400) == "1h30m"."""
    rest, parts = int(total), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def covered(r: Rules, metric: str, labels: str, window: str | None, baseline: str, *pins: str) -> str:
    """`and on (labels)` clauses that hold only while the raw `metric` (pinned by `pins`) was
    scraped within the last tolerance (an hour), within the tolerance before the start of the
    current `window`, and before the start of the oldest window averaged over `baseline`: the
    value and the average it is compared with both span their full length.

    A fresh install (or a new currency) waits `window` + `baseline`; an exporter that stops
    being scraped, or a Prometheus outage longer than the window, shuts the gate until a whole
    window has been seen again. Gaps up to the tolerance (a restart) keep it open. The raw
    metric, not a recorded series, is checked because rules keep evaluating over old samples
    when scrapes stop.
    """
    c = r.config
    selector = f"{metric}{c.matchers(*pins)}"
    tolerance = duration(max(3600.0, 2 * seconds(c.interval)))
    starts = [0.0, seconds(window)] if window else [0.0]
    starts.append(seconds(window or "0s") + seconds(baseline))
    offsets = [f" offset {duration(start)}" if start else "" for start in starts]
    return "".join(
        f"\nand on ({labels})\n  max by ({labels}) (present_over_time({selector}[{tolerance}]{offset}))"
        for offset in offsets
    )


def quantile_name(q: float) -> str:
    digits = f"{q:.6f}".rstrip("0").split(".")[1] or "0"
    return f"p{digits}"


# --- alerts ---


def _alert(
    r: Rules, name: str, expr: str, for_: str, labels: dict[str, str], summary: str, description: str
) -> None:
    r.alerts.append(
        {
            "alert": name,
            "expr": expr,
            "for": for_,
            "labels": labels,
            "annotations": {
                "summary": summary,
                "description": description,
                "runbook_url": f"{r.config.runbook_url.rstrip('/')}/{name}.md",
            },
        }
    )


def _pct(ratio: float) -> str:
    return f"{ratio * 100:g}%"



def charge_failure_spike(r: Rules) -> None:
    s = r.config.charge_failure_spike
    ch = charge_outcomes(r, s.window)
    mode = r.by("livemode")
    both = f'{ch}{{status=~"succeeded|failed"}}'
    expr = f"""\
(
  sum by ({mode}) ({ch}{{status="failed"}})
/
  sum by ({mode}) ({both})
) > {s.ratio:g}
and on ({mode})
  sum by ({mode}) ({both}) >= {s.min_charges}"""
    _alert(
        r, "BillingChargeFailureSpike", expr, s.for_,
        {"detector": "charge_failure_spike", "severity": s.severity},
        "{{ $value | humanizePercentage }} of charges failed in the last " + s.window,
        "{{ $value | humanizePercentage }} of charges (livemode={{ $labels.livemode }}) failed in the last "
        f"{s.window}, above the {_pct(s.ratio)} threshold (counted from {s.min_charges} charges up). "
        "Card testing, a broken checkout or a processor outage.",
    )


def fraud_spike(r: Rules) -> None:
    s = r.config.fraud_spike
    disputes = by_mode(r, "billingwatch_disputes_total", ("reason",), s.window)
    ch = charge_outcomes(r, s.window)
    mode = r.by("livemode")

    def succeeded(*pins: str) -> str:
        matchers = ",".join(('status="succeeded"', *pins))
        return f"sum by ({mode}) ({ch}{{{matchers}}})"

    def ratio(*pins: str) -> str:
        pinned = "{" + ",".join(pins) + "}" if pins else ""
        return f"{disputes}{pinned} / on ({mode}) {succeeded(*pins)}"

    # The value is always the dispute count (defined even with no charge); the description
    # reads the ratio back with a query pinned to the alert's own labels.
    expr = f"""\
  {disputes} >= {s.max_disputes}
or
  {disputes}
and on ({mode})
  ({ratio()} > {s.dispute_ratio:g})
and on ({mode})
  {succeeded()} >= {s.min_charges}"""
    labels = r.by("livemode").split(", ")
    # `< Inf`: with no successful charge (the count exists at 0) the share is unknown, not +Inf%.
    pinned = ratio(*(f"{label}=%q" for label in labels)) + " < Inf"
    args = " ".join(f"$labels.{label}" for _ in range(pinned.count("%q") // len(labels)) for label in labels)
    measured = (
        f"{{{{ with printf `{pinned}` {args} | query }}}}{{{{ . | first | value | humanizePercentage }}}}"
        "{{ else }}an unknown share{{ end }}"
    )
    _alert(
        r, "BillingFraudSpike", expr, s.for_, {"detector": "fraud_spike", "severity": s.severity},
        "{{ $value | humanize }} disputes opened in the last " + s.window,
        "{{ $value | humanize }} disputes were opened in the last " + s.window
        + f" (livemode={{{{ $labels.livemode }}}}), {measured} of successful charges. Alerts from "
        f"{_pct(s.dispute_ratio)} of at least {s.min_charges} charges, or from {s.max_disputes} disputes "
        "whatever the volume; card networks put accounts in monitoring programmes from about 0.75-1%.",
    )


def early_fraud_warnings(r: Rules) -> None:
    s = r.config.early_fraud_warnings
    efw = by_mode(r, "billingwatch_early_fraud_warnings_total", ("fraud_type",), s.window)
    usual = averaged(r, efw, s.baseline)
    mode = r.by("livemode")
    full = covered(r, "billingwatch_early_fraud_warnings_total", mode, s.window, s.baseline)
    expr = f"""\
  {efw} >= {s.min_count}
and on ({mode})
  {efw} > {s.rise_factor:g} * {usual}{full}"""
    _alert(
        r, "BillingEarlyFraudWarningsRising", expr, s.for_,
        {"detector": "fraud_spike", "severity": s.severity},
        "{{ $value | humanize }} Radar early fraud warnings in the last " + s.window,
        "{{ $value | humanize }} Radar early fraud warnings arrived in the last " + s.window
        + f" (livemode={{{{ $labels.livemode }}}}), more than {s.rise_factor:g} times the usual count per "
        f"{s.window} over the last {s.baseline}. Disputes on these charges usually follow within weeks.",
    )


def revenue_drop(r: Rules) -> None:
    s = r.config.revenue_drop
    amount = charge_amount(r, s.window)
    amount_avg = averaged(r, amount, s.baseline)
    count_avg = averaged(r, charges(r, s.window), s.baseline)
    cur = r.by("currency", "livemode")
    full = covered(r, "billingwatch_charge_amount_total", cur, s.window, s.baseline, 'status="succeeded"')
    expr = f"""\
  1 - (
      {amount}{{status="succeeded"}}
    / on ({cur})
      {amount_avg}{{status="succeeded"}}
  ) > {s.drop_ratio:g}
and on ({cur})
  {count_avg}{{status="succeeded"}} >= {s.min_daily_charges}{full}"""
    _alert(
        r, "BillingRevenueDrop", expr, s.for_,
        {"detector": "revenue_drop", "severity": s.severity},
        "{{ $labels.currency | toUpper }} charge volume {{ $value | humanizePercentage }} below its "
        + s.baseline + " average",
        "Successful charge volume in {{ $labels.currency | toUpper }} (livemode={{ $labels.livemode }}) over "
        f"the last {s.window} is {{{{ $value | humanizePercentage }}}} below its average per {s.window} over the "
        f"last {s.baseline} (threshold {_pct(s.drop_ratio)}).",
    )


def mrr_drop(r: Rules) -> None:
    s = r.config.mrr_drop
    c = r.config
    cur = r.by("currency", "livemode")
    mrr = r.record(
        "currency_livemode:billingwatch_mrr_amount:max",
        f"max by ({cur}) (billingwatch_mrr_amount{c.matchers()})",
    )
    usual = averaged(r, mrr, s.baseline)
    target = c.matchers(livemode=False)
    # The in-process store forgets subscriptions on restart, so its MRR restarts from zero: no
    # drop alert while such a restart is inside the baseline.
    expr = f"""\
  1 - (
      {mrr}
    / on ({cur})
      {usual}
  ) > {s.drop_ratio:g}
unless on ()
  (
    max(changes(process_start_time_seconds{target}[{s.baseline}])) > 0
    and on ()
    max(billingwatch_build_info{c.matchers('store="memory"', livemode=False)})
  ){covered(r, "billingwatch_mrr_amount", cur, None, s.baseline)}"""
    _alert(
        r, "BillingMRRDrop", expr, s.for_,
        {"detector": "revenue_drop", "severity": s.severity},
        "{{ $labels.currency | toUpper }} MRR {{ $value | humanizePercentage }} below its " + s.baseline + " average",
        "Monthly recurring revenue in {{ $labels.currency | toUpper }} (livemode={{ $labels.livemode }}) is "
        f"{{{{ $value | humanizePercentage }}}} below its average over the last {s.baseline} "
        f"(threshold {_pct(s.drop_ratio)}).",
    )


def silent_lapse(r: Rules) -> None:
    s = r.config.silent_lapse
    c = r.config
    expr = f"max by ({r.by('livemode')}) (billingwatch_subscriptions_lapsed{c.matchers()}) >= {s.min_lapsed}"
    _alert(
        r, "BillingSilentLapse", expr, s.for_,
        {"detector": "silent_lapse", "severity": s.severity},
        "{{ $value | humanize }} active subscriptions are not being paid",
        "{{ $value | humanize }} subscriptions (livemode={{ $labels.livemode }}) are still active although their "
        "period ended more than the grace period ago with no paid invoice since: service is given away.",
    )


def webhook_lag(r: Rules) -> None:
    s = r.config.webhook_lag
    c = r.config
    metric = "billingwatch_webhook_delivery_lag_seconds"
    buckets = r.record(
        f"le_livemode:{metric}_bucket:rate{s.window}",
        f"max by ({r.by('le', 'livemode')}) (rate({metric}_bucket{c.matchers()}[{s.window}]))",
    )
    mode = r.by("livemode")
    quantile = r.record(
        f"livemode:{metric}:{quantile_name(s.quantile)}_rate{s.window}",
        f"histogram_quantile({s.quantile:g}, {buckets})",
    )
    count = r.record(
        f"livemode:{metric}_count:increase{s.window}",
        f"max by ({mode}) (increase({metric}_count{c.matchers()}[{s.window}]))",
    )
    expr = f"""\
  {quantile} > {seconds(s.threshold):g}
and on ({mode})
  {count} >= {s.min_events}"""
    _alert(
        r, "BillingWebhookLag", expr, s.for_,
        {"detector": "webhook_lag", "severity": s.severity},
        "Stripe events arrive {{ $value | humanizeDuration }} late",
        f"The {quantile_name(s.quantile)} delay from an event's creation at Stripe to its recording here was "
        f"{{{{ $value | humanizeDuration }}}} over the last {s.window} (livemode={{{{ $labels.livemode }}}}), "
        f"above {s.threshold}. Stripe is retrying failed deliveries or the endpoint is slow.",
    )


def webhook_silence(r: Rules) -> None:
    s = r.config.webhook_silence
    c = r.config
    mode = r.by("livemode")
    last = r.record(
        "livemode:billingwatch_last_event_received_timestamp_seconds:max",
        f"max by ({mode}) (billingwatch_last_event_received_timestamp_seconds{c.matchers()})",
    )
    events = r.record(
        f"livemode:billingwatch_events:rate{s.baseline}",
        f"sum by ({mode}) (max by ({r.by('type', 'livemode')}) "
        f"(rate(billingwatch_events_total{c.matchers()}[{s.baseline}])))",
    )
    # The silence allowed is the time this account usually takes to receive `expected_events`
    # events: an account with no traffic (rate 0, allowance +Inf) never alerts.
    expr = f"""\
  time() - {last}
> on ({mode})
  clamp_min({s.expected_events} / {events}, {seconds(s.min_silence):g})"""
    _alert(
        r, "BillingWebhookSilence", expr, s.for_,
        {"detector": "webhook_silence", "severity": s.severity},
        "No Stripe event received for {{ $value | humanizeDuration }}",
        "No Stripe event (livemode={{ $labels.livemode }}) has arrived for {{ $value | humanizeDuration }}, "
        f"although this account usually receives {s.expected_events} in less time (event rate over the last "
        f"{s.baseline}). Stripe may have disabled the endpoint, or a deploy broke the route.",
    )


def refund_spike(r: Rules) -> None:
    s = r.config.refund_spike
    c = r.config
    cur = r.by("currency", "livemode")
    # Refunds that stand: a refund that later failed or was canceled is taken back through its
    # own counter (a counter never goes down); `or` keeps the figure where that series is absent.
    counted = f"max by ({cur}) (increase(billingwatch_refund_amount_total{c.matchers()}[{s.window}]))"
    reversed_ = f"max by ({cur}) (increase(billingwatch_refund_reversed_amount_total{c.matchers()}[{s.window}]))"
    refunded = r.record(
        f"currency_livemode:billingwatch_refund_amount:increase{s.window}",
        f"({counted} - on ({cur}) {reversed_}) or {counted}",
    )
    amount = charge_amount(r, s.window)
    count = charges(r, s.window)
    expr = f"""\
  {refunded}
/ on ({cur})
  {amount}{{status="succeeded"}}
> {s.ratio:g}
and on ({cur})
  {count}{{status="succeeded"}} >= {s.min_charges}"""
    _alert(
        r, "BillingRefundSpike", expr, s.for_,
        {"detector": "refund_spike", "severity": s.severity},
        "Refunds at {{ $value | humanizePercentage }} of {{ $labels.currency | toUpper }} charge volume",
        "Refunds in {{ $labels.currency | toUpper }} (livemode={{ $labels.livemode }}) over the last "
        f"{s.window} amount to {{{{ $value | humanizePercentage }}}} of the successful charge volume, above the "
        f"{_pct(s.ratio)} threshold.",
    )


def anomaly(r: Rules) -> None:
    s = r.config.anomaly
    c = r.config
    # Every detector's series exists at 0 from the exporter's start, so the first anomaly is an
    # increase; detector and severity are the anomaly's own labels: a new detector needs no rule.
    expr = (
        f"max by ({r.by('detector', 'severity', 'livemode')}) "
        f"(increase(billingwatch_anomalies_total{c.matchers()}[{s.window}])) > 0"
    )
    # increase() extrapolates: on a series a few scrapes old, one anomaly can read as 1.5. The
    # description counts exactly from the raw counter (the change over the window, or the whole
    # count of a series younger than the window or reset within it).
    labels = r.by("detector", "severity", "livemode").split(", ")
    pins = "{" + ",".join(f"{label}=%q" for label in labels) + "}"

    def series(offset: str = "") -> str:
        return f"max by ({', '.join(labels)}) (billingwatch_anomalies_total{pins}{offset})"

    exact = f"({series()} - {series(' offset ' + s.window)}) >= 0 or {series()}"
    args = " ".join(f"$labels.{label}" for _ in range(3) for label in labels)
    count = (f"{{{{ with printf `{exact}` {args} | query }}}}{{{{ . | first | value | printf \"%.0f\" }}}}"
             '{{ else }}{{ printf "%.0f" $value }}{{ end }}')
    _alert(
        r, "BillingAnomalyDetected", expr, s.for_, {},
        "{{ $labels.detector }}: billing anomaly detected",
        count + " {{ $labels.detector }} anomalies (livemode={{ $labels.livemode }}) in the last "
        + s.window + ". Details (customer, charge and invoice ids) at /api/anomalies?detector={{ $labels.detector }}.",
    )


def meta(r: Rules) -> None:
    c = r.config
    target = c.matchers(livemode=False)
    down = c.exporter_down
    _alert(
        r, "BillingWatchExporterDown", f"up{target} == 0\nor\nabsent(up{target})", down.for_,
        {"detector": "exporter_down", "severity": down.severity},
        "{{ if $labels.instance }}BillingWatch {{ $labels.instance }} is down{{ else }}BillingWatch is not "
        "scraped{{ end }}",
        "{{ if $labels.instance }}Prometheus cannot scrape BillingWatch at {{ $labels.instance }}{{ else }}No "
        f"Prometheus target matches {c.selector}{{{{ end }}}}: no billing figure comes from it and no billing "
        "alert can fire on it. If no replica answers, Stripe's webhooks fail (Stripe retries them for up to 3 days).",
    )
    store = c.store_down
    _alert(
        r, "BillingWatchStoreDown", f"billingwatch_store_up{target} == 0", store.for_,
        {"detector": "store_down", "severity": store.severity},
        "BillingWatch {{ $labels.instance }} cannot reach its store",
        "BillingWatch at {{ $labels.instance }} cannot reach its store (Redis): webhooks are answered 503 "
        "(Stripe retries them) and the billing metrics are missing.",
    )


DETECTORS = (
    charge_failure_spike, fraud_spike, early_fraud_warnings, revenue_drop, mrr_drop, silent_lapse,
    webhook_lag, webhook_silence, refund_spike, anomaly, meta,
)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def build(config: RulesConfig, detectors: Iterable[Any] = DETECTORS) -> dict[str, Any]:
    """The rule file as data: one group, recording rules first so alerts read fresh values."""
    r = Rules(config, {}, [])
    for detector in detectors:
        detector(r)
    rules: list[dict[str, Any]] = [{"record": name, "expr": expr} for name, expr in r.records.items()]
    return {"groups": [{"name": "billingwatch", "interval": config.interval, "rules": [*rules, *r.alerts]}]}


HEADER = """\
# Generated by `billingwatch rules` from {source}: do not edit by hand.
# Change the thresholds in a config file (see rules/config.yml) and render again:
#   billingwatch rules --config my.yml -o rules/billingwatch.rules.yml
"""


def render_rules(config: RulesConfig) -> str:
    """The Prometheus rule file (YAML text) for `config`."""
    source = "the defaults" if config.source == "defaults" else "a custom config"
    body = yaml.dump(build(config), Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
    return HEADER.format(source=source) + body
