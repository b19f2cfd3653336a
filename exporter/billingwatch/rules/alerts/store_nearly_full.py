"""BillingWatchStoreNearlyFull (meta): Redis is close to its maxmemory."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, pct
from billingwatch.rules.values import Duration

ALERT = "BillingWatchStoreNearlyFull"

COMMENT = """\
BillingWatchStoreNearlyFull: Redis uses more than `ratio` of its maxmemory. Once full it refuses
writes (noeviction): webhooks get 503 and BillingWatchStoreDown fires. Quiet without a maxmemory."""


@dataclass(frozen=True)
class StoreNearlyFull:
    """BillingWatchStoreNearlyFull: used_memory / maxmemory > `ratio` (maxmemory above 0)."""

    priority: Priority = "P2"
    ratio: float = 0.9
    for_: Duration = "10m"


Config = StoreNearlyFull


def render(r: Rules, s: StoreNearlyFull) -> None:
    target = r.config.matchers(livemode=False)
    # Every replica reports the same Redis: one alert per deployment, not per replica. A maxmemory
    # of 0 (no limit) leaves no series to divide by, so the alert stays quiet.
    expr = f"""\
max by ({r.by()}) (
    billingwatch_store_used_memory_bytes{target}
  / (billingwatch_store_max_memory_bytes{target} > 0)
) > {s.ratio:g}"""
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "store_nearly_full", "priority": s.priority},
        "BillingWatch's Redis is {{ $value | humanizePercentage }} full",
        f"BillingWatch's Redis uses {{{{ $value | humanizePercentage }}}} of its maxmemory (above {pct(s.ratio)}). "
        "When it is full it refuses writes: webhooks are answered 503 (Stripe retries them) until memory is "
        "freed or maxmemory raised.",
    )
