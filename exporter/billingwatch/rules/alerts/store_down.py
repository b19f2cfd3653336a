"""BillingWatchStoreDown (meta): a replica cannot reach its store."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert
from billingwatch.rules.values import Duration

ALERT = "BillingWatchStoreDown"

COMMENT = """\
BillingWatchStoreDown: a replica cannot reach its store (Redis): webhooks get 503 (Stripe
retries them) and the store-backed metrics disappear."""


@dataclass(frozen=True)
class StoreDown:
    """BillingWatchStoreDown: billingwatch_store_up == 0 on a replica."""

    priority: Priority = "P2"
    for_: Duration = "5m"


Config = StoreDown


def render(r: Rules, s: StoreDown) -> None:
    target = r.config.matchers(livemode=False)
    alert(
        r, ALERT, f"billingwatch_store_up{target} == 0", s.for_,
        {"detector": "store_down", "priority": s.priority},
        "BillingWatch {{ $labels.instance }} cannot reach its store",
        "BillingWatch at {{ $labels.instance }} cannot reach its store (Redis): webhooks are answered 503 "
        "(Stripe retries them) and the billing metrics are missing.",
    )
