"""BillingEarlyFraudWarningsRising: Radar early fraud warnings above their usual count."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, averaged, by_mode, covered
from billingwatch.rules.values import Duration

ALERT = "BillingEarlyFraudWarningsRising"

COMMENT = """\
BillingEarlyFraudWarningsRising: Radar early fraud warnings, which come days before the
disputes they turn into. Fires when the window's count is at least `min_count` and more
than `rise_factor` times the usual count per window over the baseline."""


@dataclass(frozen=True)
class EarlyFraudWarnings:
    """BillingEarlyFraudWarningsRising (detector fraud_spike): at least `min_count` Radar early
    fraud warnings in `window`, and more than `rise_factor` times the average per window over
    `baseline`."""

    priority: Priority = "P2"
    min_count: int = 3
    rise_factor: float = 2.0
    window: Duration = "24h"
    baseline: Duration = "7d"
    for_: Duration = "15m"


Config = EarlyFraudWarnings


def render(r: Rules, s: EarlyFraudWarnings) -> None:
    efw = by_mode(r, "billingwatch_early_fraud_warnings_total", ("fraud_type",), s.window)
    usual = averaged(r, efw, s.baseline)
    mode = r.by("livemode")
    full = covered(r, "billingwatch_early_fraud_warnings_total", mode, s.window, s.baseline)
    expr = f"""\
  {efw} >= {s.min_count}
and on ({mode})
  {efw} > {s.rise_factor:g} * {usual}{full}"""
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "fraud_spike", "priority": s.priority},
        "{{ $value | humanize }} Radar early fraud warnings in the last " + s.window,
        "{{ $value | humanize }} Radar early fraud warnings arrived in the last " + s.window
        + f" (livemode={{{{ $labels.livemode }}}}), more than {s.rise_factor:g} times the usual count per "
        f"{s.window} over the last {s.baseline}. Disputes on these charges usually follow within weeks.",
    )
