"""BillingWatchExporterDown (meta): Prometheus does not scrape BillingWatch."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert
from billingwatch.rules.values import Duration

ALERT = "BillingWatchExporterDown"

COMMENT = """\
BillingWatchExporterDown: a target is not scraped (up == 0), or there is no target at all."""


@dataclass(frozen=True)
class ExporterDown:
    """BillingWatchExporterDown: up == 0 for a target, or no target matches the selector."""

    priority: Priority = "P2"
    for_: Duration = "5m"


Config = ExporterDown


def render(r: Rules, s: ExporterDown) -> None:
    c = r.config
    target = c.matchers(livemode=False)
    alert(
        r, ALERT, f"up{target} == 0\nor\nabsent(up{target})", s.for_,
        {"detector": "exporter_down", "priority": s.priority},
        "{{ if $labels.instance }}BillingWatch {{ $labels.instance }} is down{{ else }}BillingWatch is not "
        "scraped{{ end }}",
        "{{ if $labels.instance }}Prometheus cannot scrape BillingWatch at {{ $labels.instance }}{{ else }}No "
        f"Prometheus target matches {c.selector}{{{{ end }}}}: no billing figure comes from it and no billing "
        "alert can fire on it. If no replica answers, Stripe's webhooks fail (Stripe retries them for up to 3 days).",
    )
