"""BillingFraudSpike: disputes against successful charges, across currencies."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, by_mode, charge_outcomes, pct
from billingwatch.rules.values import Duration, knob

ALERT = "BillingFraudSpike"

COMMENT = """\
BillingFraudSpike: disputes against charges, both counted across currencies (so a first dispute
in a new currency counts). Stripe's programmes start at about 0.75-1% of
charges disputed, so alert before reaching them. Lower `max_disputes` for a low-volume
business where every dispute matters."""


@dataclass(frozen=True)
class FraudSpike:
    """BillingFraudSpike: disputes / successful charges over `window` > `dispute_ratio` with at
    least `min_charges` successful charges, or at least `max_disputes` disputes in the window."""

    priority: Priority = "P1"
    dispute_ratio: float = knob(0.01, "disputes / successful charges in the window")
    min_charges: int = knob(100, "the ratio needs at least this many successful charges in the window")
    max_disputes: int = knob(5, "this many disputes in the window alert whatever the volume")
    window: Duration = "24h"
    for_: Duration = "5m"


Config = FraudSpike


def render(r: Rules, s: FraudSpike) -> None:
    disputes = by_mode(r, "billingwatch_disputes_total", ("reason",), s.window)
    ch = charge_outcomes(r, s.window)
    mode = r.by("livemode")

    def succeeded(*pins: str) -> str:
        matchers = ",".join(('status="succeeded"', *pins))
        return f"sum by ({mode}) ({ch}{{{matchers}}})"

    def ratio(*pins: str) -> str:
        pinned = "{" + ",".join(pins) + "}" if pins else ""
        return f"{disputes}{pinned} / on ({mode}) {succeeded(*pins)}"

    # The value is always the dispute count (defined even with no charge); the description
    # reads the ratio back with a query pinned to the alert's own labels.
    expr = f"""\
  {disputes} >= {s.max_disputes}
or
  {disputes}
and on ({mode})
  ({ratio()} > {s.dispute_ratio:g})
and on ({mode})
  {succeeded()} >= {s.min_charges}"""
    labels = r.by("livemode").split(", ")
    # `< Inf`: with no successful charge (the count exists at 0) the share is unknown, not +Inf%.
    pinned = ratio(*(f"{label}=%q" for label in labels)) + " < Inf"
    args = " ".join(f"$labels.{label}" for _ in range(pinned.count("%q") // len(labels)) for label in labels)
    measured = (
        f"{{{{ with printf `{pinned}` {args} | query }}}}{{{{ . | first | value | humanizePercentage }}}}"
        "{{ else }}an unknown share{{ end }}"
    )
    alert(
        r, ALERT, expr, s.for_, {"detector": "fraud_spike", "priority": s.priority},
        "{{ $value | humanize }} disputes opened in the last " + s.window,
        "{{ $value | humanize }} disputes were opened in the last " + s.window
        + f" (livemode={{{{ $labels.livemode }}}}), {measured} of successful charges. Alerts from "
        f"{pct(s.dispute_ratio)} of at least {s.min_charges} charges, or from {s.max_disputes} disputes "
        "whatever the volume; card networks put accounts in monitoring programmes from about 0.75-1%.",
    )
