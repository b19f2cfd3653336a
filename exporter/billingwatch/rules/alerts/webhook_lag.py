"""BillingWebhookLag: Stripe's events arrive late."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, quantile_name
from billingwatch.rules.values import Duration, knob, seconds

ALERT = "BillingWebhookLag"

COMMENT = """\
BillingWebhookLag: how late Stripe's events arrive (event creation to recording). Raise
`threshold` if your endpoint is known to lag (Stripe retries after failures are late by
design); `min_events` keeps a handful of late events from alerting. The quantile moves only
when more than 1 - quantile (5%) of the window's events are late."""


@dataclass(frozen=True)
class WebhookLag:
    """BillingWebhookLag: the `quantile` of webhook delivery lag over `window` above `threshold`,
    when at least `min_events` events were recorded in the window."""

    priority: Priority = "P4"
    quantile: float = 0.95
    threshold: Duration = "10m"
    min_events: int = knob(10, "events recorded in the window before the quantile counts")
    window: Duration = "30m"
    for_: Duration = "15m"


Config = WebhookLag


def render(r: Rules, s: WebhookLag) -> None:
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
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "webhook_lag", "priority": s.priority},
        "Stripe events arrive {{ $value | humanizeDuration }} late",
        f"The {quantile_name(s.quantile)} delay from an event's creation at Stripe to its recording here was "
        f"{{{{ $value | humanizeDuration }}}} over the last {s.window} (livemode={{{{ $labels.livemode }}}}), "
        f"above {s.threshold}. Stripe is retrying failed deliveries or the endpoint is slow.",
    )
