"""BillingReviewBacklog: a Radar review open for too long."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert
from billingwatch.rules.values import Duration, seconds

ALERT = "BillingReviewBacklog"

COMMENT = """\
BillingReviewBacklog: the oldest Radar review still open was opened more than `max_age` ago.
Payments in review are held: orders wait for fulfilment, and a review left open past 7 days
is closed by Stripe as the payment is refunded or captured by default. Reviews count from the
review.opened events BillingWatch received (or replayed)."""


@dataclass(frozen=True)
class ReviewBacklog:
    """BillingReviewBacklog (detector review_backlog): a review opened more than `max_age` ago is
    still open."""

    priority: Priority = "P3"
    max_age: Duration = "24h"
    for_: Duration = "5m"


Config = ReviewBacklog


def render(r: Rules, s: ReviewBacklog) -> None:
    c = r.config
    mode = r.by("livemode")
    oldest = r.record(
        "livemode:billingwatch_review_oldest_open_timestamp_seconds:max",
        f"max by ({mode}) (billingwatch_review_oldest_open_timestamp_seconds{c.matchers()})",
    )
    expr = f"time() - ({oldest} > 0) > {seconds(s.max_age):g}"
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "review_backlog", "priority": s.priority},
        "A Radar review has been open for {{ $value | humanizeDuration }}",
        "The oldest open Radar review (livemode={{ $labels.livemode }}) was opened {{ $value | humanizeDuration }} "
        f"ago, more than {s.max_age}; billingwatch_reviews_open says how many wait. Its payment is held until "
        "someone approves or refunds it in the Dashboard's review queue.",
    )
