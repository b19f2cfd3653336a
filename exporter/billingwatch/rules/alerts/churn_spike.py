"""BillingChurnSpike: per currency, churned MRR over the window against MRR at its start."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, covered, mrr_movements, pct
from billingwatch.rules.values import Duration, knob

ALERT = "BillingChurnSpike"

COMMENT = """\
BillingChurnSpike: per currency, the MRR of customers who churned (cancelled, or whose
subscriptions turned unpaid) over `window`, as a share of the MRR at the start of the window.
Contraction (downgrades) does not count. Raise `max_share` if your business loses that much
every week by design (monthly plans with a short life)."""


@dataclass(frozen=True)
class ChurnSpike:
    """BillingChurnSpike: per currency, churned MRR over `window` > `max_share` of the MRR
    `window` ago; quiet until the movement counter covers the window."""

    priority: Priority = "P3"
    max_share: float = knob(0.05, "churned MRR in the window / MRR at the start of the window")
    window: Duration = "7d"
    for_: Duration = "1h"


Config = ChurnSpike


def render(r: Rules, s: ChurnSpike) -> None:
    c = r.config
    cur = r.by("currency", "livemode")
    moved = mrr_movements(r, s.window)
    # The counter must have been scraped at the start of the window too (warm-up, a long
    # Prometheus gap and a currency first seen in the window are quiet); MRR then is the base.
    full = covered(r, "billingwatch_mrr_movement_amount_total", cur, None, s.window, 'kind="churn"')
    expr = f"""\
  max by ({cur}) ({moved}{{kind="churn"}})
/ on ({cur})
  (max by ({cur}) (billingwatch_mrr_amount{c.matchers()} offset {s.window}) > 0)
> {s.max_share:g}{full}"""
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "churn_spike", "priority": s.priority},
        "{{ $labels.currency | toUpper }} churned MRR at {{ $value | humanizePercentage }} of MRR in " + s.window,
        "Customers who churned in the last " + s.window + " in {{ $labels.currency | toUpper }} (livemode="
        "{{ $labels.livemode }}) took {{ $value | humanizePercentage }} of the MRR of " + s.window + " ago, "
        f"above the {pct(s.max_share)} threshold. Cancellations or renewals failing in bulk.",
    )
