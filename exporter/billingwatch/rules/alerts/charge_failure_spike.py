"""BillingChargeFailureSpike: the share of charges that fail, across currencies."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, charge_outcomes, pct
from billingwatch.rules.values import Duration, knob

ALERT = "BillingChargeFailureSpike"

COMMENT = """\
BillingChargeFailureSpike: the share of charges that fail (card testing, a broken checkout,
a processor outage), counted across currencies, so the first charges in a new currency count.
Raise `ratio` if your customers' cards decline often (e.g. high-risk regions); raise
`min_charges` if a handful of declines in a quiet hour pages you."""


@dataclass(frozen=True)
class ChargeFailureSpike:
    """BillingChargeFailureSpike: failed / (succeeded + failed) charges over `window` > `ratio`,
    when at least `min_charges` charges happened in the window."""

    priority: Priority = "P2"
    ratio: float = knob(0.15, "failed / (succeeded + failed) charges in the window")
    min_charges: int = knob(20, "no alert below this many charges in the window (no alert on 1 failure of 3)")
    window: Duration = "1h"
    for_: Duration = "10m"


Config = ChargeFailureSpike


def render(r: Rules, s: ChargeFailureSpike) -> None:
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
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "charge_failure_spike", "priority": s.priority},
        "{{ $value | humanizePercentage }} of charges failed in the last " + s.window,
        "{{ $value | humanizePercentage }} of charges (livemode={{ $labels.livemode }}) failed in the last "
        f"{s.window}, above the {pct(s.ratio)} threshold (counted from {s.min_charges} charges up). "
        "Card testing, a broken checkout or a processor outage.",
    )
