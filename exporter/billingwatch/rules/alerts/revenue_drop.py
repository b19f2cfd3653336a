"""BillingRevenueDrop: per currency, successful charge volume below its usual level."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, averaged, charge_amount, charges, covered, pct
from billingwatch.rules.values import Duration, knob

ALERT = "BillingRevenueDrop"

COMMENT = """\
BillingRevenueDrop: per currency, successful charge volume in the last `window` against its
average per window over the `baseline`. Raise `drop_ratio` if your revenue is seasonal
within a week (quiet weekends); raise `min_daily_charges` to ignore small currencies."""


@dataclass(frozen=True)
class RevenueDrop:
    """BillingRevenueDrop: per currency, successful charge volume over `window` more than
    `drop_ratio` below its average per window over `baseline`, for currencies averaging at
    least `min_daily_charges` successful charges per window."""

    priority: Priority = "P2"
    drop_ratio: float = knob(0.15, "alert when the window is more than 15% below the baseline average")
    min_daily_charges: int = knob(10, "ignore currencies averaging fewer successful charges per window")
    window: Duration = "24h"
    baseline: Duration = "7d"
    for_: Duration = "1h"


Config = RevenueDrop


def render(r: Rules, s: RevenueDrop) -> None:
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
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "revenue_drop", "priority": s.priority},
        "{{ $labels.currency | toUpper }} charge volume {{ $value | humanizePercentage }} below its "
        + s.baseline + " average",
        "Successful charge volume in {{ $labels.currency | toUpper }} (livemode={{ $labels.livemode }}) over "
        f"the last {s.window} is {{{{ $value | humanizePercentage }}}} below its average per {s.window} over the "
        f"last {s.baseline} (threshold {pct(s.drop_ratio)}).",
    )
