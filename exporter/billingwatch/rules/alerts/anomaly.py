"""BillingAnomalyDetected: the exporter's stateful detectors (one generic rule for all of them)."""

from dataclasses import dataclass

from billingwatch.rules.render import Rules, alert
from billingwatch.rules.values import Duration

ALERT = "BillingAnomalyDetected"

COMMENT = """\
BillingAnomalyDetected: any stateful detector of the exporter (duplicate_charge,
negative_invoice, ...); severity, priority and detector come from the anomaly itself. The alert fires
on the first anomaly and stays active for `window` after the last one."""


@dataclass(frozen=True)
class AnomalyAlert:
    """BillingAnomalyDetected: any increase of billingwatch_anomalies_total over `window`;
    detector, severity and priority come from the anomaly's own labels."""

    window: Duration = "1h"
    for_: Duration = "0s"


Config = AnomalyAlert


def render(r: Rules, s: AnomalyAlert) -> None:
    c = r.config
    # Every detector's series exists at 0 from the exporter's start, so the first anomaly is an
    # increase; detector, severity and priority are the anomaly's own labels: a new detector needs no rule.
    expr = (
        f"max by ({r.by('detector', 'severity', 'priority', 'livemode')}) "
        f"(increase(billingwatch_anomalies_total{c.matchers()}[{s.window}])) > 0"
    )
    # increase() extrapolates: on a series a few scrapes old, one anomaly can read as 1.5. The
    # description counts exactly from the raw counter (the change over the window, or the whole
    # count of a series younger than the window or reset within it).
    labels = r.by("detector", "severity", "priority", "livemode").split(", ")
    pins = "{" + ",".join(f"{label}=%q" for label in labels) + "}"

    def series(offset: str = "") -> str:
        return f"max by ({', '.join(labels)}) (billingwatch_anomalies_total{pins}{offset})"

    exact = f"({series()} - {series(' offset ' + s.window)}) >= 0 or {series()}"
    args = " ".join(f"$labels.{label}" for _ in range(3) for label in labels)
    count = (f"{{{{ with printf `{exact}` {args} | query }}}}{{{{ . | first | value | printf \"%.0f\" }}}}"
             '{{ else }}{{ printf "%.0f" $value }}{{ end }}')
    alert(
        r, ALERT, expr, s.for_, {},
        "{{ $labels.detector }}: billing anomaly detected",
        count + " {{ $labels.detector }} anomalies (livemode={{ $labels.livemode }}) in the last "
        + s.window + ". Details (who, how much, the Stripe objects) at /anomalies?detector={{ $labels.detector }}.",
    )
