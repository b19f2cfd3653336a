"""BillingRefundSpike: per currency, refunds against successful charge volume."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, charge_amount, charges, pct
from billingwatch.rules.values import Duration, knob

ALERT = "BillingRefundSpike"

COMMENT = """\
BillingRefundSpike: per currency, refunded amount / successful charge amount in the window
(a refund script gone wrong, a product problem). Raise `ratio` if you refund a lot by design."""


@dataclass(frozen=True)
class RefundSpike:
    """BillingRefundSpike: per currency, refunded / successful charge amount over `window` >
    `ratio`, when at least `min_charges` successful charges in that currency in the window."""

    priority: Priority = "P3"
    ratio: float = 0.10
    min_charges: int = knob(20, "successful charges in that currency in the window")
    window: Duration = "24h"
    for_: Duration = "30m"


Config = RefundSpike


def render(r: Rules, s: RefundSpike) -> None:
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
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "refund_spike", "priority": s.priority},
        "Refunds at {{ $value | humanizePercentage }} of {{ $labels.currency | toUpper }} charge volume",
        "Refunds in {{ $labels.currency | toUpper }} (livemode={{ $labels.livemode }}) over the last "
        f"{s.window} amount to {{{{ $value | humanizePercentage }}}} of the successful charge volume, above the "
        f"{pct(s.ratio)} threshold.",
    )
