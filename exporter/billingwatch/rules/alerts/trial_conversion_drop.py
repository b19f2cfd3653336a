"""BillingTrialConversionDrop: fewer trials turn into paying subscriptions than usual."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, averaged, covered, pct, trial_conversion, trials_ended
from billingwatch.rules.values import Duration, knob

ALERT = "BillingTrialConversionDrop"

COMMENT = """\
BillingTrialConversionDrop: the share of trials ending in `window` that converted to paid
(converted / (converted + expired)) against its average over the baseline (a broken checkout
at the end of the trial, a card form failing, a pricing change). Raise `min_ended_trials` if
few trials end per window and the ratio swings."""


@dataclass(frozen=True)
class TrialConversionDrop:
    """BillingTrialConversionDrop: per mode, trial conversion over `window` more than
    `drop_ratio` below its average over `baseline`, when at least `min_ended_trials` trials
    ended in the window; quiet until the trial counters cover window + baseline."""

    priority: Priority = "P3"
    drop_ratio: float = knob(0.3, "alert when conversion is more than 30% below its baseline average")
    min_ended_trials: int = knob(20, "trials ended (converted + expired) in the window before the ratio counts")
    window: Duration = "7d"
    baseline: Duration = "28d"
    for_: Duration = "1h"


Config = TrialConversionDrop


def render(r: Rules, s: TrialConversionDrop) -> None:
    mode = r.by("livemode")
    rate = trial_conversion(r, s.window)
    usual = averaged(r, rate, s.baseline)
    ended = trials_ended(r, s.window)
    full = covered(r, "billingwatch_trials_ended_total", mode, s.window, s.baseline)
    expr = f"""\
  {rate}
< on ({mode})
  {1 - s.drop_ratio:g} * {usual}
and on ({mode})
  sum by ({mode}) ({ended}) >= {s.min_ended_trials}{full}"""
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "trial_conversion_drop", "priority": s.priority},
        "{{ $value | humanizePercentage }} of trials converted in the last " + s.window,
        "{{ $value | humanizePercentage }} of the trials that ended in the last " + s.window
        + f" (livemode={{{{ $labels.livemode }}}}) converted to paid, more than {pct(s.drop_ratio)} below the "
        f"average over the last {s.baseline} (counted from {s.min_ended_trials} ended trials).",
    )
