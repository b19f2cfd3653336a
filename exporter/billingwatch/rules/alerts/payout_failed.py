"""BillingPayoutFailed: a payout failed: money that did not reach the bank."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, by_mode
from billingwatch.rules.values import Duration

ALERT = "BillingPayoutFailed"

COMMENT = """\
BillingPayoutFailed: any failed payout (payout.failed): money Stripe could not send to your
bank; Stripe returns it to the balance and pauses automatic payouts to that account until the
bank details are fixed. Stays active for `window` after the failure."""


@dataclass(frozen=True)
class PayoutFailed:
    """BillingPayoutFailed (detector payout_failed): at least one payout failed in `window`."""

    priority: Priority = "P1"
    window: Duration = "24h"
    for_: Duration = "0m"


Config = PayoutFailed


def render(r: Rules, s: PayoutFailed) -> None:
    failed = by_mode(r, "billingwatch_payout_failures_total", ("reason",), s.window)
    alert(
        r, ALERT, f"{failed} > 0", s.for_,
        {"detector": "payout_failed", "priority": s.priority},
        "{{ $value | humanize }} payouts failed in the last " + s.window,
        "{{ $value | humanize }} payouts (livemode={{ $labels.livemode }}) failed in the last " + s.window
        + ": money that did not reach the bank. billingwatch_payout_failures_total{reason} names the "
        "failure code; Stripe pauses automatic payouts to that bank account until it is fixed.",
    )
