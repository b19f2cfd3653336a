"""BillingDisputeLossRate: the share of closed disputes that were lost."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, increase, pct
from billingwatch.rules.values import Duration, knob

ALERT = "BillingDisputeLossRate"

COMMENT = """\
BillingDisputeLossRate: lost / closed disputes over `window` (charge.dispute.closed; inquiries
closed as warning_closed never became chargebacks and are left out). Each lost dispute costs
its amount and the dispute fee. Raise `min_closed` if a few disputes a month page you."""


@dataclass(frozen=True)
class DisputeLossRate:
    """BillingDisputeLossRate (detector dispute_loss_rate): lost / closed disputes over `window`
    > `ratio`, when at least `min_closed` disputes closed in the window."""

    priority: Priority = "P3"
    ratio: float = knob(0.75, "lost / closed disputes (won, lost, other) in the window")
    min_closed: int = knob(10, "no alert below this many closed disputes in the window")
    window: Duration = "30d"
    for_: Duration = "1h"


Config = DisputeLossRate


def render(r: Rules, s: DisputeLossRate) -> None:
    closed = increase(r, "billingwatch_disputes_closed", ("outcome", "livemode"), s.window)
    mode = r.by("livemode")
    decided = f'{closed}{{outcome!="warning_closed"}}'
    expr = f"""\
(
  sum by ({mode}) ({closed}{{outcome="lost"}})
/
  sum by ({mode}) ({decided})
) > {s.ratio:g}
and on ({mode})
  sum by ({mode}) ({decided}) >= {s.min_closed}"""
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "dispute_loss_rate", "priority": s.priority},
        "{{ $value | humanizePercentage }} of disputes closed in the last " + s.window + " were lost",
        "{{ $value | humanizePercentage }} of the disputes (livemode={{ $labels.livemode }}) closed in the last "
        f"{s.window} were lost, above the {pct(s.ratio)} threshold (counted from {s.min_closed} closed disputes "
        "up). The evidence submitted is not winning: see billingwatch_dispute_lost_amount_total for the cost.",
    )
