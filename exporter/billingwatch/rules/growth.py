"""The growth figures (issue 16): recording rules for the dashboard's Growth row and for anyone
querying Prometheus, recorded whether or not an alert reads them.

Money stays per currency and mode; a ratio whose denominator is 0 or absent has no sample
(`> 0` guards every division), so nothing reads a 0/0 as a figure. The 30-day ratios divide by
the value 30 days ago: they appear once Prometheus holds 30 days of the metric.
"""

from billingwatch.rules.render import Rules, averaged, mrr_movements, trial_conversion

# Kinds of billingwatch_mrr_movement_amount_total that add MRR and those that take it away
# (every amount is positive; net new MRR = gains - losses).
GAINS = "new|expansion|reactivation"
LOSSES = "contraction|churn"

# Fixed report windows: a day for the daily figure, 30 days for the monthly rates.
DAY = "1d"
MONTH = "30d"
TRIAL_WINDOW = "7d"
TRIAL_BASELINE = "28d"


def net_new(r: Rules, window: str) -> str:
    """New + expansion + reactivation - contraction - churn MRR over `window`, per currency."""
    moved = mrr_movements(r, window)
    cur = r.by("currency", "livemode")
    return r.record(
        f"currency_livemode:billingwatch_mrr_movement_amount:net_increase{window}",
        f'sum by ({cur}) ({moved}{{kind=~"{GAINS}"}}) - on ({cur}) sum by ({cur}) ({moved}{{kind=~"{LOSSES}"}})',
    )


def render(r: Rules) -> None:
    c = r.config
    cur = r.by("currency", "livemode")
    net_new(r, DAY)
    net_new(r, MONTH)
    moved = mrr_movements(r, MONTH)
    # Logo churn: customers lost over 30 days / paying customers 30 days ago.
    lost = c.matchers('kind="churn"')
    churned = f"max by ({cur}) (increase(billingwatch_customer_movements_total{lost}[{MONTH}]))"
    r.record(
        f"currency_livemode:billingwatch_customer_movements:churn_ratio{MONTH}",
        f"{churned} / on ({cur}) (max by ({cur}) (billingwatch_paying_customers{c.matchers()} offset {MONTH}) > 0)",
    )
    # Revenue churn: MRR lost (churn + contraction) over 30 days / MRR 30 days ago.
    r.record(
        f"currency_livemode:billingwatch_mrr_movement_amount:churn_ratio{MONTH}",
        f'sum by ({cur}) ({moved}{{kind=~"{LOSSES}"}}) / on ({cur}) '
        f"(max by ({cur}) (billingwatch_mrr_amount{c.matchers()} offset {MONTH}) > 0)",
    )
    # ARPU: MRR per paying customer, per currency.
    mrr = r.record(
        "currency_livemode:billingwatch_mrr_amount:max",
        f"max by ({cur}) (billingwatch_mrr_amount{c.matchers()})",
    )
    r.record(
        "currency_livemode:billingwatch_mrr_amount:per_paying_customer",
        f"{mrr} / on ({cur}) (max by ({cur}) (billingwatch_paying_customers{c.matchers()}) > 0)",
    )
    averaged(r, trial_conversion(r, TRIAL_WINDOW), TRIAL_BASELINE)

