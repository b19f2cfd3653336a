"""BillingMRRDrop: per currency, monthly recurring revenue below its usual level."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, averaged, covered, pct
from billingwatch.rules.values import Duration

ALERT = "BillingMRRDrop"

COMMENT = """\
BillingMRRDrop: per currency, monthly recurring revenue against its average over the
baseline (mass cancellations, a pricing bug, a broken renewal)."""


@dataclass(frozen=True)
class MrrDrop:
    """BillingMRRDrop (detector revenue_drop): per currency, MRR more than `drop_ratio` below
    its average over `baseline`."""

    priority: Priority = "P2"
    drop_ratio: float = 0.15
    baseline: Duration = "7d"
    for_: Duration = "1h"


Config = MrrDrop


def render(r: Rules, s: MrrDrop) -> None:
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
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "revenue_drop", "priority": s.priority},
        "{{ $labels.currency | toUpper }} MRR {{ $value | humanizePercentage }} below its " + s.baseline + " average",
        "Monthly recurring revenue in {{ $labels.currency | toUpper }} (livemode={{ $labels.livemode }}) is "
        f"{{{{ $value | humanizePercentage }}}} below its average over the last {s.baseline} "
        f"(threshold {pct(s.drop_ratio)}).",
    )
