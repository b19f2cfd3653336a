"""BillingSilentLapse: active subscriptions that are no longer paid."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert
from billingwatch.rules.values import Duration

ALERT = "BillingSilentLapse"

COMMENT = """\
BillingSilentLapse: active subscriptions with no successful payment past their period end
plus the exporter's grace (BILLINGWATCH_LAPSE_GRACE_SECONDS). Raise `min_lapsed` if you
knowingly keep a few unpaid subscriptions active."""


@dataclass(frozen=True)
class SilentLapse:
    """BillingSilentLapse: at least `min_lapsed` subscriptions in billingwatch_subscriptions_lapsed."""

    priority: Priority = "P3"
    min_lapsed: int = 1
    for_: Duration = "15m"


Config = SilentLapse


def render(r: Rules, s: SilentLapse) -> None:
    c = r.config
    expr = f"max by ({r.by('livemode')}) (billingwatch_subscriptions_lapsed{c.matchers()}) >= {s.min_lapsed}"
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "silent_lapse", "priority": s.priority},
        "{{ $value | humanize }} active subscriptions are not being paid",
        "{{ $value | humanize }} subscriptions (livemode={{ $labels.livemode }}) are still active although their "
        "period ended more than the grace period ago with no paid invoice since: service is given away.",
    )
