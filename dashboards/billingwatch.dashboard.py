"""The BillingWatch Grafana dashboard, written with grafanalib.

Regenerate the committed JSON after editing (tests/test_dashboard.py fails when they differ):

    generate-dashboard -o dashboards/billingwatch.json dashboards/billingwatch.dashboard.py

Thresholds and the target selector come from the same config as the Prometheus rules
(billingwatch.rules.load_config: rules/config.yml). To render a dashboard for your own config,
set BILLINGWATCH_RULES_CONFIG=my.yml on that command.

Metric semantics (README "Metrics"): store-backed figures are global, so every replica exposes
the same value and queries take `max` across instances; only webhook_requests_total is per
replica and is summed. Money is shown per currency and never summed across currencies; counts
behind the alerts (charge outcomes, disputes) come from the currency-free families.
"""

import os
import re
from typing import Any

import attr
from grafanalib.core import (
    Annotations,
    Dashboard,
    GridPos,
    Repeat,
    RowPanel,
    Stat,
    Table,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

from billingwatch.rules import growth, load_config, seconds
from billingwatch.rules.render import kept_labels, quantile_name
from billingwatch.rules.rulefile import build

CONFIG = load_config(os.environ.get("BILLINGWATCH_RULES_CONFIG") or None)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Labels kept when collapsing replicas besides a metric's own, as the rules keep them: the
# selector's pinned labels and `keep_labels` (several deployments in one Prometheus).
KEEP = kept_labels(CONFIG)
# The selector's `label="value"` matchers: the only target labels recorded series and alerts keep.
PINNED = [f'{name}="{value}"' for name, value in re.findall(r'([a-zA-Z_]\w*)\s*=\s*"([^"]*)"', CONFIG.selector)]
# Series recorded by the rules rendered from the same config (rules/billingwatch.rules.yml).
RECORDED = {rule["record"] for group in build(CONFIG)["groups"] for rule in group["rules"] if "record" in rule}

# Grafana's built-in currency units; other currencies get a custom prefix or stay plain numbers
# (their legend still names the currency).
CURRENCY_UNITS = {
    "usd": "currencyUSD", "eur": "currencyEUR", "gbp": "currencyGBP", "jpy": "currencyJPY",
    "chf": "currencyCHF", "sek": "currencySEK", "nok": "currencyNOK", "dkk": "currencyDKK",
    "pln": "currencyPLN", "czk": "currencyCZK", "brl": "currencyBRL", "inr": "currencyINR",
    "krw": "currencyKRW", "zar": "currencyZAR", "idr": "currencyIDR", "php": "currencyPHP",
    "cad": "prefix:CA$", "aud": "prefix:A$", "nzd": "prefix:NZ$", "sgd": "prefix:S$",
    "hkd": "prefix:HK$", "mxn": "prefix:MX$",
}


# The dashboard's account choice (BILLINGWATCH_ACCOUNTS_FILE; `default` without it). A regex:
# "All" shows every account, each series apart (the queries keep `account`, as the rules do).
ACCOUNT = 'account=~"$account"'


def sel(*extra: str, livemode: bool = True, currency: bool = False, account: bool = True) -> str:
    """The configured target selector, the dashboard's livemode/currency/account choice and
    `extra`; account=False for the process's own figures (up, build info), which have none."""
    matchers = [*extra]
    if account:
        matchers.insert(0, ACCOUNT)
    if livemode:
        matchers.insert(0, 'livemode="$livemode"')
    if currency:
        matchers.append('currency=~"$currency"')
    return CONFIG.matchers(*matchers, livemode=False)


# The process's own figures (up, build info, process_*): no mode, no account.
PROCESS = sel(livemode=False, account=False)


def recorded(name: str, *extra: str, currency: bool = False) -> str:
    """A series the rules record, selected like the raw metrics. Fails at render time when the
    rules no longer record it, so the dashboard cannot drift from them unnoticed."""
    if name not in RECORDED:
        raise LookupError(f"the rules do not record {name}")
    matchers = [*PINNED, 'livemode="$livemode"', ACCOUNT, *extra]
    if currency:
        matchers.append('currency=~"$currency"')
    return name + "{" + ",".join(matchers) + "}"


def agg(op: str, expr: str, *labels: str) -> str:
    """`op by (labels) (expr)`, keeping the configured labels too; `op(expr)` when there are none."""
    keep = [*labels, *KEEP]
    return f"{op} by ({', '.join(keep)}) ({expr})" if keep else f"{op}({expr})"


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, instant=instant, format=fmt, datasource=DATASOURCE)


def steps(*levels: tuple[str, float]) -> list[dict[str, Any]]:
    """Threshold steps: green below the first level, then each colour from its value up."""
    return [{"color": "green", "value": None}, *({"color": c, "value": v} for c, v in levels)]


def money_overrides() -> list[dict[str, Any]]:
    """Each series named after its currency (legend "{{currency}}...") gets that currency's unit:
    Grafana does not expand variables in units, so one override per known currency."""
    return [
        {
            "matcher": {"id": "byRegexp", "options": f"^{code}.*$"},
            "properties": [{"id": "unit", "value": unit}],
        }
        for code, unit in CURRENCY_UNITS.items()
    ]


def timeseries(title: str, targets: list[Target], unit: str, description: str, *,
               thresholds: list[dict[str, Any]] | None = None, bars: bool = False,
               overrides: list[dict[str, Any]] | None = None, stack: bool = False,
               repeat: Repeat | None = None, links: list[dict[str, Any]] | None = None) -> TimeSeries:
    return TimeSeries(
        title=title, description=description, dataSource=DATASOURCE, targets=targets, unit=unit,
        thresholds=thresholds or steps(), thresholdsStyleMode="dashed" if thresholds else "off",
        drawStyle="bars" if bars else "line", fillOpacity=60 if bars else 10, spanNulls=True,
        stacking={"mode": "normal", "group": "A"} if stack else {},
        overrides=overrides or [], legendDisplayMode="table", legendCalcs=["lastNotNull", "max"],
        tooltipMode="multi", maxDataPoints=500, repeat=repeat or Repeat(),
        extraJson={"fieldConfig": {"defaults": {"links": links}}} if links else None,
    )


def stat(title: str, targets: list[Target], unit: str, description: str, *,
         thresholds: list[dict[str, Any]] | None = None, no_value: str = "none") -> Stat:
    return Stat(
        title=title, description=description, dataSource=DATASOURCE, targets=targets, format=unit,
        thresholds=thresholds or steps(), reduceCalc="lastNotNull", graphMode="area",
        colorMode="background" if thresholds else "value", noValue=no_value,
    )


def table(title: str, targets: list[Target], description: str, hidden: list[str], unit: str = "none",
          links: list[dict[str, Any]] | None = None) -> Table:
    return Table(
        title=title, description=description, dataSource=DATASOURCE, targets=targets, unit=unit,
        transformations=[
            {"id": "organize", "options": {"excludeByName": {name: True for name in hidden}}},
        ],
        extraJson={"fieldConfig": {"defaults": {"links": links}}} if links else None,
    )


# The BillingWatch pages (docs/sign-in.md#grafana): a data link opens the anomalies a point or a
# row counts. ${billingwatch_url} is the dashboard variable below; the query follows the pages'
# URL contract (detector, priority, livemode, and range= or from=/to= in ISO 8601).
BILLINGWATCH_URL = "http://localhost:9786"
ANOMALIES_PAGE = "${billingwatch_url:raw}/anomalies?detector=%s&priority=%s&livemode=${livemode}"


def anomaly_links(detector: str, priority: str, window: str) -> list[dict[str, Any]]:
    """One data link to the /anomalies page, filtered like the clicked series or row; `window`
    is the time part of the query."""
    return [{"title": "Open these anomalies in BillingWatch", "targetBlank": True,
             "url": ANOMALIES_PAGE % (detector, priority) + window}]


# An anomaly series' labels besides livemode: priority for the page's filter, severity as alerts show it.
LEVEL_LABELS = ("detector", "priority", "severity")
DASHBOARD_TIME = "&from=${__from:date:iso}&to=${__to:date:iso}"
SERIES_LINKS = anomaly_links("${__field.labels.detector}", "${__field.labels.priority}", DASHBOARD_TIME)


def layout(rows: list[tuple[str, list[tuple[Any, int, int]]]]) -> list[Any]:
    """Rows of (panel, width, height) placed left to right on Grafana's 24-column grid."""
    panels: list[Any] = []
    y = 0
    for title, row in rows:
        panels.append(RowPanel(title=title, gridPos=GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        x, line_height = 0, 0
        for panel, width, height in row:
            if x + width > 24:
                x, y, line_height = 0, y + line_height, 0
            panel.gridPos = GridPos(h=height, w=width, x=x, y=y)
            panels.append(panel)
            x += width
            line_height = max(line_height, height)
        y += line_height
    return panels


RATE = "$__rate_interval"
SUCCEEDED = 'status="succeeded"'
FAILED = 'status="failed"'
SETTLED = 'status=~"succeeded|failed"'
failure = CONFIG.charge_failure_spike
fraud = CONFIG.fraud_spike
efw = CONFIG.early_fraud_warnings
revenue = CONFIG.revenue_drop
mrr = CONFIG.mrr_drop
refund = CONFIG.refund_spike
lag = CONFIG.webhook_lag
silence = CONFIG.webhook_silence
churn = CONFIG.churn_spike
trials = CONFIG.trial_conversion_drop
payouts = CONFIG.payout_failed
losses = CONFIG.dispute_loss_rate
auth = CONFIG.authentication_failure_spike
reviews = CONFIG.review_backlog

# The series the alerts are computed from (names as rules/billingwatch.rules.yml records them).
CHARGES_FAILURE_WINDOW = f"livemode_status:billingwatch_charge_outcomes:increase{failure.window}"
CHARGES_FRAUD_WINDOW = f"livemode_status:billingwatch_charge_outcomes:increase{fraud.window}"
DISPUTES = f"livemode:billingwatch_disputes:increase{fraud.window}"
EFW = f"livemode:billingwatch_early_fraud_warnings:increase{efw.window}"
EFW_USUAL = f"{EFW}_avg{efw.baseline}"
CHARGED = f"currency_livemode_status:billingwatch_charge_amount:increase{revenue.window}"
CHARGED_USUAL = f"{CHARGED}_avg{revenue.baseline}"
MRR = "currency_livemode:billingwatch_mrr_amount:max"
MRR_USUAL = f"{MRR}_avg{mrr.baseline}"
REFUNDED = f"currency_livemode:billingwatch_refund_amount:increase{refund.window}"
CHARGED_REFUND_WINDOW = f"currency_livemode_status:billingwatch_charge_amount:increase{refund.window}"
LAG_BUCKETS = f"le_livemode:billingwatch_webhook_delivery_lag_seconds_bucket:rate{lag.window}"
LAG_QUANTILE = f"livemode:billingwatch_webhook_delivery_lag_seconds:{quantile_name(lag.quantile)}_rate{lag.window}"
LAST_EVENT = "livemode:billingwatch_last_event_received_timestamp_seconds:max"
EVENT_RATE = f"livemode:billingwatch_events:rate{silence.baseline}"
NET_NEW_DAY = f"currency_livemode:billingwatch_mrr_movement_amount:net_increase{growth.DAY}"
NET_NEW_MONTH = f"currency_livemode:billingwatch_mrr_movement_amount:net_increase{growth.MONTH}"
LOGO_CHURN = f"currency_livemode:billingwatch_customer_movements:churn_ratio{growth.MONTH}"
REVENUE_CHURN = f"currency_livemode:billingwatch_mrr_movement_amount:churn_ratio{growth.MONTH}"
ARPU = "currency_livemode:billingwatch_mrr_amount:per_paying_customer"
CONVERSION = f"livemode:billingwatch_trials_ended:conversion_ratio{trials.window}"
CONVERSION_USUAL = f"{CONVERSION}_avg{trials.baseline}"
PAYOUT_FAILURES = f"livemode:billingwatch_payout_failures:increase{payouts.window}"
DISPUTES_CLOSED = f"livemode_outcome:billingwatch_disputes_closed:increase{losses.window}"
AUTH_FAILURES = f"livemode:billingwatch_payment_intent_authentication_failures:increase{auth.window}"
AUTH_USUAL = f"{AUTH_FAILURES}_avg{auth.baseline}"
OLDEST_REVIEW = "livemode:billingwatch_review_oldest_open_timestamp_seconds:max"


def increase(metric: str, matchers: str, window: str) -> str:
    return f"increase({metric}{matchers}[{window}])"


traffic = [
    (timeseries(
        "Events received by type",
        [target(agg("max", f"rate(billingwatch_events_total{sel()}[{RATE}])", "type") + " * 60", "{{type}}")],
        "opm", "Distinct Stripe events recorded per minute, by event type (redeliveries not counted).",
        stack=True), 12, 8),
    (timeseries(
        "Webhook requests by result",
        [target(agg("sum", f"rate(billingwatch_webhook_requests_total{sel(livemode=False)}[{RATE}])", "result")
                + " * 60", "{{result}}")],
        "opm", "Requests to /webhooks/stripe per minute, summed over replicas (this counter is per "
        "replica): accepted, duplicate (a redelivery) and each rejection reason. store_unavailable means "
        "Redis did not answer and Stripe was told to retry (503).",
        stack=True), 12, 8),
]

charges_row = [
    (timeseries(
        f"Charge failure ratio ({failure.window})",
        [target(agg("sum", recorded(CHARGES_FAILURE_WINDOW, FAILED)) + " / "
                + agg("sum", recorded(CHARGES_FAILURE_WINDOW, SETTLED)), "failed / all charges")],
        "percentunit", f"Failed / (succeeded + failed) charges over {failure.window}, all currencies "
        f"(counts). The dashed line is the BillingChargeFailureSpike threshold ({failure.ratio:.0%}; it "
        f"alerts only from {failure.min_charges} charges in the window).",
        thresholds=steps(("red", failure.ratio))), 8, 8),
    (timeseries(
        "Charges by outcome",
        [target(agg("sum", agg("max", f"rate(billingwatch_charges_total{sel(currency=True)}[{RATE}])",
                               "status", "currency"), "status") + " * 60", "{{status}}")],
        "opm", "Charges per minute by outcome (succeeded, failed, pending) in the selected currencies.",
        stack=True), 8, 8),
    (timeseries(
        "Failed charges by decline reason",
        [target(agg("max", f"rate(billingwatch_charge_failures_total{sel()}[{RATE}])", "reason") + " * 60",
                "{{reason}}")],
        "opm", "Failed charges per minute by Stripe decline reason (known codes, else other). Many cards "
        "failing with one reason (card_declined, incorrect_cvc) is what card testing looks like.",
        stack=True), 8, 8),
]

revenue_row = [
    (timeseries(
        f"Charged volume per currency ({revenue.window}) and its {revenue.baseline} average",
        [
            target(recorded(CHARGED, SUCCEEDED, currency=True), "{{currency}}", "A"),
            target(recorded(CHARGED_USUAL, SUCCEEDED, currency=True),
                   "{{currency}} " + f"{revenue.baseline} average", "B"),
            target(f"{recorded(CHARGED_USUAL, SUCCEEDED, currency=True)} * {1 - revenue.drop_ratio:g}",
                   "{{currency}} alert line", "C"),
        ],
        "short", f"Successful charge volume over the last {revenue.window} per currency (never summed across "
        f"currencies), its average over {revenue.baseline}, and the BillingRevenueDrop line "
        f"{revenue.drop_ratio:.0%} below that average (for currencies averaging {revenue.min_daily_charges} "
        f"charges or more). The average covers the history Prometheus has, up to {revenue.baseline}.",
        overrides=money_overrides()), 12, 9),
    (timeseries(
        "MRR per currency",
        [
            target(recorded(MRR, currency=True), "{{currency}}", "A"),
            target(recorded(MRR_USUAL, currency=True), "{{currency}} " + f"{mrr.baseline} average", "B"),
            target(f"{recorded(MRR_USUAL, currency=True)} * {1 - mrr.drop_ratio:g}", "{{currency}} alert line", "C"),
        ],
        "short", "Monthly recurring revenue of active and past_due subscriptions (price x quantity normalised "
        f"to a month) per currency, its {mrr.baseline} average, and the BillingMRRDrop line "
        f"{mrr.drop_ratio:.0%} below that average.",
        overrides=money_overrides()), 12, 9),
]

risk_row = [
    (timeseries(
        f"Dispute ratio ({fraud.window})",
        [target(agg("sum", recorded(DISPUTES)) + " / " + agg("sum", recorded(CHARGES_FRAUD_WINDOW, SUCCEEDED)),
                "disputes / successful charges")],
        "percentunit", f"Disputes opened / successful charges over {fraud.window}. The dashed line is the "
        f"BillingFraudSpike threshold ({fraud.dispute_ratio:.1%} from {fraud.min_charges} charges; "
        f"{fraud.max_disputes} disputes in the window alert at any volume).",
        thresholds=steps(("red", fraud.dispute_ratio))), 8, 8),
    (timeseries(
        f"Disputes and early fraud warnings vs charges ({fraud.window})",
        [
            target(agg("sum", recorded(DISPUTES)), "disputes", "A"),
            target(agg("sum", recorded(EFW)), "early fraud warnings", "B"),
            target(f'{efw.rise_factor:g} * {agg("sum", recorded(EFW_USUAL))}', "early fraud warnings alert line", "C"),
            target(agg("sum", recorded(CHARGES_FRAUD_WINDOW, SUCCEEDED)), "successful charges", "D"),
        ],
        "short", f"Counts over the last {fraud.window}. Radar early fraud warnings come days before the "
        f"disputes they turn into; BillingEarlyFraudWarningsRising fires above the alert line ({efw.rise_factor:g} "
        f"times the usual count over {efw.baseline}, from {efw.min_count}). Successful charges are on the "
        "right axis for scale.",
        overrides=[{"matcher": {"id": "byName", "options": "successful charges"},
                    "properties": [{"id": "custom.axisPlacement", "value": "right"}]}]), 8, 8),
    (timeseries(
        "Disputes by reason (last hour)",
        [target(agg("max", increase("billingwatch_disputes_total", sel(), "1h"), "reason"), "{{reason}}")],
        "short", "Disputes opened in the last hour by Stripe dispute reason.", stack=True), 8, 8),
    (timeseries(
        f"Refund ratio per currency ({refund.window})",
        [target(f"{recorded(REFUNDED, currency=True)} / ignoring (status) "
                f"{recorded(CHARGED_REFUND_WINDOW, SUCCEEDED, currency=True)}", "{{currency}}")],
        "percentunit", f"Refunded amount / successful charge amount over {refund.window}, per currency. The "
        f"dashed line is the BillingRefundSpike threshold ({refund.ratio:.0%}; it alerts only from "
        f"{refund.min_charges} charges in the currency).",
        thresholds=steps(("red", refund.ratio))), 12, 8),
    (timeseries(
        "Refunded amount per currency (last hour)",
        [target(agg("max", increase("billingwatch_refund_amount_total", sel(currency=True), "1h"), "currency"),
                "{{currency}}")],
        "short", "Refunded amount over the last hour per currency (never summed across currencies).",
        overrides=money_overrides()), 12, 8),
]

signals_row = [
    (timeseries(
        "Payouts by status (last 24 hours)",
        [target(agg("max", increase("billingwatch_payout_amount_total", sel(currency=True), "24h"), "status",
                    "currency"), "{{currency}} {{status}}", "A"),
         target(recorded(PAYOUT_FAILURES), "failed payouts " + payouts.window, "B")],
        "short", "Payout amount paid, failed and canceled over the last 24 hours per currency (never summed "
        f"across currencies), and the failed payouts counted over {payouts.window}: BillingPayoutFailed fires on "
        "any (billingwatch_payout_failures_total{reason} names the failure code).",
        overrides=[*money_overrides(), {"matcher": {"id": "byRegexp", "options": "^failed payouts"},
                                        "properties": [{"id": "unit", "value": "short"},
                                                       {"id": "custom.axisPlacement", "value": "right"}]}]), 8, 8),
    (timeseries(
        f"Dispute loss rate ({losses.window})",
        [target(agg("sum", recorded(DISPUTES_CLOSED, 'outcome="lost"')) + " / "
                + agg("sum", recorded(DISPUTES_CLOSED, 'outcome!="warning_closed"')), "lost / closed disputes")],
        "percentunit", f"Lost / closed disputes over {losses.window} (inquiries closed as warning_closed left "
        f"out). The dashed line is the BillingDisputeLossRate threshold ({losses.ratio:.0%}; it alerts only from "
        f"{losses.min_closed} closed disputes). No value while none closed.",
        thresholds=steps(("red", losses.ratio))), 8, 8),
    (timeseries(
        "PaymentIntent failures by code",
        [target(agg("max", f"rate(billingwatch_payment_intent_failures_total{sel()}[{RATE}])", "code") + " * 60",
                "{{code}}", "A"),
         target(agg("max", f"rate(billingwatch_invoices_action_required_total{sel()}[{RATE}])") + " * 60",
                "invoices needing action", "B")],
        "opm", "Failed PaymentIntent attempts per minute by last_payment_error.code class "
        "(authentication_required: 3-D Secure not completed), and invoice payments waiting for the customer's "
        "action. Counted apart from the charge families.", stack=False), 8, 8),
    (timeseries(
        f"3-D Secure failures ({auth.window}) and the alert line",
        [target(recorded(AUTH_FAILURES), "authentication_required " + auth.window, "A"),
         target(f"{auth.rise_factor:g} * {recorded(AUTH_USUAL)}", "alert line", "B")],
        "short", f"authentication_required PaymentIntent failures over {auth.window}; "
        f"BillingAuthenticationFailureSpike fires above the alert line ({auth.rise_factor:g} times the usual "
        f"count over {auth.baseline}, from {auth.min_count}), once {auth.baseline} of history is there."), 8, 8),
    (timeseries(
        "Radar reviews open and the oldest's age",
        [target(agg("max", f"billingwatch_reviews_open{sel()}"), "reviews open", "A"),
         target(f"time() - ({recorded(OLDEST_REVIEW)} > 0)", "oldest open for", "B")],
        "short", "Radar reviews waiting for someone (payments held), and how long the oldest has waited; "
        f"BillingReviewBacklog fires past {reviews.max_age}.",
        overrides=[{"matcher": {"id": "byName", "options": "oldest open for"},
                    "properties": [{"id": "unit", "value": "s"},
                                   {"id": "custom.axisPlacement", "value": "right"}]}]), 8, 8),
    (timeseries(
        "Bad debt: uncollectible invoices (30 days)",
        [target(agg("max", increase("billingwatch_invoice_uncollectible_amount_total", sel(currency=True), "30d"),
                    "currency"), "{{currency}}")],
        "short", "Amount left unpaid on invoices marked uncollectible over the last 30 days, per currency "
        "(never summed across currencies).", overrides=money_overrides()), 8, 8),
]

subscriptions_row = [
    (timeseries(
        "Subscriptions by status",
        [target(agg("max", f"billingwatch_subscriptions{sel()}", "status"), "{{status}}")],
        "short", "Subscriptions BillingWatch knows of, by Stripe status (ended ones leave the gauge).",
        stack=True), 10, 8),
    (stat(
        "Lapsed subscriptions",
        [target(agg("max", f"billingwatch_subscriptions_lapsed{sel()}"))],
        "short", "Active subscriptions whose period ended more than the grace period ago with no paid "
        f"invoice since. BillingSilentLapse fires from {CONFIG.silent_lapse.min_lapsed}.",
        thresholds=steps(("orange", CONFIG.silent_lapse.min_lapsed))), 4, 8),
    (timeseries(
        "Invoice payment failures and ended subscriptions (last hour)",
        [
            target(agg("max", increase("billingwatch_invoice_payment_failures_total", sel(), "1h"), "attempt"),
                   "payment failed, attempt {{attempt}}", "A"),
            target(agg("max", increase("billingwatch_subscriptions_ended_total", sel(), "1h")),
                   "subscriptions ended", "B"),
        ],
        "short", "Failed invoice payment attempts by attempt number (dunning), and subscriptions that "
        "reached canceled or incomplete_expired, over the last hour."), 10, 8),
]

# Money panels stacked by kind or plan are repeated per selected currency: a stack across
# currencies would add them up.
PER_CURRENCY = Repeat("h", "currency", 2)
DAY_SECONDS = 86400
TRIALING = 'status="trialing"'


def movements(kinds: str) -> str:
    """MRR moved per day by the `kinds` (a regex), per kind and currency."""
    matchers = sel(f'kind=~"{kinds}"', currency=True)
    return agg("max", f"rate(billingwatch_mrr_movement_amount_total{matchers}[{RATE}])", "kind", "currency") \
        + f" * {DAY_SECONDS}"


growth_row = [
    (timeseries(
        "MRR movements per day ($currency)",
        [
            target(movements(growth.GAINS), "{{currency}} {{kind}}", "A"),
            target("-" + movements(growth.LOSSES), "{{currency}} {{kind}}", "B"),
        ],
        "short", "MRR gained (new, expansion, reactivation) and lost (contraction and churn, drawn below zero) "
        "per day, one panel per currency. Each subscription change moves exactly one kind by the change of "
        "its customer's MRR; replayed history moves none (docs/revenue.md).",
        stack=True, bars=True, overrides=money_overrides(), repeat=PER_CURRENCY), 12, 8),
    (timeseries(
        "Net new MRR",
        [
            target(recorded(NET_NEW_DAY, currency=True), "{{currency}} " + f"last {growth.DAY}", "A"),
            target(f"{recorded(NET_NEW_MONTH, currency=True)} / 30", "{{currency}} daily average over "
                   + growth.MONTH, "B"),
        ],
        "short", f"New + expansion + reactivation - contraction - churn MRR over the last {growth.DAY}, and the "
        f"average per day over {growth.MONTH}, per currency (never summed across currencies).",
        overrides=money_overrides()), 12, 8),
    (timeseries(
        f"Churn rates ({growth.MONTH})",
        [
            target(recorded(LOGO_CHURN, currency=True), "{{currency}} logo churn", "A"),
            target(recorded(REVENUE_CHURN, currency=True), "{{currency}} revenue churn", "B"),
        ],
        "percentunit", f"Logo churn: customers who churned over {growth.MONTH} / paying customers {growth.MONTH} "
        f"ago. Revenue churn: MRR lost to churn and contraction over {growth.MONTH} / MRR {growth.MONTH} ago. "
        f"Shown once Prometheus holds {growth.MONTH} of history. BillingChurnSpike fires when churned MRR over "
        f"{churn.window} exceeds {churn.max_share:.0%} of the MRR at the start of it."), 8, 8),
    (timeseries(
        "ARPU and paying customers",
        [
            target(recorded(ARPU, currency=True), "{{currency}} ARPU", "A"),
            target(agg("max", f"billingwatch_paying_customers{sel(currency=True)}", "currency"),
                   "paying customers ({{currency}})", "B"),
        ],
        "short", "Average revenue per paying customer (MRR / customers paying in that currency), per currency, "
        "and the number of paying customers (right axis).",
        overrides=[*money_overrides(),
                   {"matcher": {"id": "byRegexp", "options": "^paying customers.*$"},
                    "properties": [{"id": "unit", "value": "short"},
                                   {"id": "custom.axisPlacement", "value": "right"}]}]), 8, 8),
    (timeseries(
        "MRR by plan ($currency)",
        [target(agg("max", f"billingwatch_mrr_by_plan_amount{sel(currency=True)}", "plan", "currency"),
                "{{currency}} {{plan}}")],
        "short", "MRR split by plan (BILLINGWATCH_PLANS maps price or product ids to plan names; the rest is "
        "`other`), stacked: the stack is the currency's MRR. One panel per currency.",
        stack=True, overrides=money_overrides(), repeat=PER_CURRENCY), 8, 8),
    (timeseries(
        "Trials",
        [
            target(agg("max", f"billingwatch_subscriptions{sel(TRIALING)}"), "trialing", "A"),
            target(agg("max", increase("billingwatch_trials_started_total", sel(), "1d")), "started (last 24h)", "B"),
            target(agg("max", increase("billingwatch_trials_ended_total", sel(), "1d"), "outcome"),
                   "{{outcome}} (last 24h)", "C"),
        ],
        "short", "Subscriptions in trial now, and trials started, converted to paid and expired over the last "
        "24 hours (all currencies: counts)."), 12, 8),
    (timeseries(
        f"Trial conversion ({trials.window})",
        [
            target(recorded(CONVERSION), "converted / ended trials", "A"),
            target(recorded(CONVERSION_USUAL), f"{trials.baseline} average", "B"),
            target(f"{recorded(CONVERSION_USUAL)} * {1 - trials.drop_ratio:g}", "alert line", "C"),
        ],
        "percentunit", f"Share of the trials ended over the last {trials.window} that converted to paid, its "
        f"average over {trials.baseline}, and the BillingTrialConversionDrop line {trials.drop_ratio:.0%} below "
        f"it (from {trials.min_ended_trials} ended trials in the window)."), 12, 8),
]

delivery_row = [
    (timeseries(
        f"Webhook delivery lag ({lag.window})",
        [
            target(f"histogram_quantile(0.5, {recorded(LAG_BUCKETS)})", "p50", "A"),
            target(recorded(LAG_QUANTILE), quantile_name(lag.quantile), "B"),
        ],
        "s", f"Seconds from an event's creation at Stripe to its recording, over {lag.window}. The dashed line "
        f"is the BillingWebhookLag threshold ({quantile_name(lag.quantile)} above {lag.threshold}, from "
        f"{lag.min_events} events in the window).",
        thresholds=steps(("red", seconds(lag.threshold)))), 10, 8),
    (timeseries(
        "Time since the last event",
        [
            target(f"time() - {recorded(LAST_EVENT)}", "since the last event", "A"),
            target(f"clamp_min({silence.expected_events} / {recorded(EVENT_RATE)}, {seconds(silence.min_silence):g})",
                   "silence alert line", "B"),
        ],
        "s", "Seconds since the newest distinct event arrived, and the BillingWebhookSilence line: the time "
        f"this account usually takes to receive {silence.expected_events} events (its rate over "
        f"{silence.baseline}), at least {silence.min_silence}."), 10, 8),
    (stat(
        "Age of the newest event",
        [target("time() - " + agg("max", f"billingwatch_last_event_created_timestamp_seconds{sel()}"))],
        "s", "Seconds since the largest Stripe `created` time recorded: how far behind Stripe's clock the "
        "newest event is (a backlog of Stripe retries shows here)."), 4, 8),
]

anomalies_row = [
    (timeseries(
        "Anomalies by detector",
        [target(agg("max", increase("billingwatch_anomalies_total", sel(), RATE), *LEVEL_LABELS),
                "{{detector}} ({{priority}} {{severity}})")],
        "short", "Anomalies found by the exporter's stateful detectors (duplicate_charge, negative_invoice, "
        "currency_mismatch, double_invoice, ...). Click a bar for the anomalies themselves, with customer and "
        "charge ids, on BillingWatch's /anomalies page (the billingwatch_url variable says where it is).",
        bars=True, stack=True, links=SERIES_LINKS), 16, 8),
    (table(
        "Anomalies in the last 24 hours",
        [target(agg("max", increase("billingwatch_anomalies_total", sel(), "24h"), *LEVEL_LABELS) + " > 0",
                instant=True, fmt="table")],
        "Detectors that found anything in the last 24 hours, with the count; click a row for its anomalies.",
        hidden=["Time"], unit="short",
        links=anomaly_links("${__data.fields.detector}", "${__data.fields.priority}", "&range=24h")), 8, 8),
    (timeseries(
        "Anomalies found in imported history",
        [target(agg("max", increase("billingwatch_history_anomalies_total", sel(), RATE), *LEVEL_LABELS),
                "{{detector}} ({{priority}} {{severity}})")],
        "short", "Anomalies found in replayed history (backfill, replay, reconcile --replay): past events, news "
        "worth reading but not a page, so they never fire BillingAnomalyDetected. Listed at the exporter's "
        "/api/anomalies with \"history\": true and their event time; click a bar for them.",
        bars=True, stack=True, links=SERIES_LINKS), 12, 8),
    (timeseries(
        "History imported by type",
        [target(agg("max", increase("billingwatch_history_events_total", sel(), RATE), "type"), "{{type}}")],
        "short", "Events imported as history (backfill, replay, reconcile --replay), by type. History updates "
        "state (subscriptions, MRR, detector memory) but moves no live counter: the rate panels and alerts "
        "never see a backfill as traffic.",
        bars=True, stack=True), 12, 8),
    (table(
        "Detector precision (30 d)",
        # Verdicts have no livemode label; the counter is store-held, so each replica shows the same
        # value: max over replicas, then the detector's verdicts summed.
        [target(agg("max", increase("billingwatch_anomaly_feedback_total", sel('verdict="expected"', livemode=False),
                                    "30d"), "detector")
                + " / (" + agg("sum", agg("max", increase("billingwatch_anomaly_feedback_total", sel(livemode=False),
                                                            "30d"), "detector", "verdict"), "detector") + " > 0)",
                instant=True, fmt="table")],
        "Of the verdicts people gave on each detector's anomalies at the exporter's /anomalies pages in the "
        "last 30 days, the share that said \"expected\"; false positives / verdicts is 1 minus this. Only "
        "detectors with a verdict show; a changed verdict counts under both.",
        hidden=["Time"], unit="percentunit"), 12, 8),
]

alerts_row = [
    (table(
        "Alerts firing or pending",
        # Alerts keep only the selector's pinned labels (the rules aggregate across replicas), so
        # ALERTS is selected by those and by name: every BillingWatch alert starts with "Billing".
        [target("max by (alertname, alertstate, detector, severity, priority, livemode, currency) "
                "(ALERTS{" + ",".join([*PINNED, 'alertname=~"Billing.*"']) + "})", instant=True, fmt="table")],
        "BillingWatch alerts from Prometheus' ALERTS series, with detector, severity and priority. A pending "
        "alert waits out its `for` duration before it fires and reaches Alertmanager.",
        hidden=["Time", "Value"]), 24, 7),
]

health_row = [
    (stat(
        "Exporter targets up", [target(agg("sum", f"up{PROCESS}"))],
        "short", "BillingWatch scrape targets that answered the last scrape. BillingWatchExporterDown fires "
        "on a target down or no target at all.",
        thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}], no_value="0"), 4, 6),
    (stat(
        "Store (Redis) up", [target(agg("min", f"billingwatch_store_up{sel(livemode=False)}"))],
        "short", "1 when every replica reached its store at the last scrape. With Redis down, webhooks are "
        "answered 503 (Stripe retries them) and the store-backed panels go blank.",
        thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]), 4, 6),
    (table(
        "Replicas",
        [target(agg("max", f"billingwatch_build_info{PROCESS}", "instance", "version", "store",
                    "python_version"), instant=True, fmt="table")],
        "Running exporter replicas, their version and store.", hidden=["Time", "Value"]), 8, 6),
    (timeseries(
        "Exporter memory and CPU",
        [
            target(agg("max", f"process_resident_memory_bytes{PROCESS}", "instance"),
                   "{{instance}} memory", "A"),
            target(agg("max", f"rate(process_cpu_seconds_total{PROCESS}[{RATE}])", "instance"),
                   "{{instance}} CPU", "B"),
        ],
        "bytes", "Resident memory and CPU (seconds per second) of each replica.",
        overrides=[{"matcher": {"id": "byRegexp", "options": ".* CPU$"},
                    "properties": [{"id": "unit", "value": "percentunit"},
                                   {"id": "custom.axisPlacement", "value": "right"}]}]), 8, 6),
]


def variables() -> list[Template]:
    by_datasource = {"type": "prometheus", "uid": "${datasource}"}
    currency = Template(
        name="currency", label="Currency", dataSource=by_datasource, refresh=2, sort=1, multi=True,
        query=f"label_values(billingwatch_charges_total{sel()}, currency)", includeAll=True, allValue=".*",
    )
    currency._current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    account = Template(
        name="account", label="Account", dataSource=by_datasource, refresh=2, sort=1, multi=True,
        query=f"label_values(billingwatch_events_total{CONFIG.matchers(livemode=False)}, account)",
        includeAll=True, allValue=".*",
    )
    account._current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return [
        # A data source variable rather than ${DS_...} inputs: the JSON imports into any Grafana
        # and also loads through file provisioning (which does not resolve inputs).
        Template(name="datasource", label="Data source", type="datasource", query="prometheus"),
        # One mode at a time: live and test figures must not be mixed. Sorted descending so
        # "true" is picked when live data exists, else "false".
        Template(
            name="livemode", label="Live mode", dataSource=by_datasource, refresh=2, sort=2,
            query=f"label_values(billingwatch_events_total{CONFIG.matchers(livemode=False)}, livemode)",
        ),
        currency,
        account,
        # Where the data links open BillingWatch's pages, as browsers reach the exporter.
        Template(name="billingwatch_url", label="BillingWatch URL", type="textbox", query=BILLINGWATCH_URL,
                 default=BILLINGWATCH_URL),
    ]


# Anomalies as annotations on the money panels: a mark wherever the anomaly counter rose.
MONEY_PANELS = ("Charged volume per currency", "MRR per currency", "Refund ratio per currency",
                "Refunded amount per currency", "Net new MRR", "ARPU and paying customers")
ANOMALY_MARKS = agg("max", increase("billingwatch_anomalies_total", sel(), RATE), *LEVEL_LABELS) + " > 0"


def anomaly_annotation(panel_ids: list[int]) -> dict[str, Any]:
    return {
        "name": "Anomalies", "enable": True, "hide": False, "iconColor": "red", "datasource": DATASOURCE,
        "expr": ANOMALY_MARKS, "step": "1m", "useValueForTime": False,
        "titleFormat": "{{detector}} ({{priority}} {{severity}})",
        "textFormat": "anomaly found: see BillingWatch's /anomalies",
        "tagKeys": "detector,priority,severity", "filter": {"exclude": False, "ids": panel_ids},
    }


def with_annotations(board: Dashboard) -> Dashboard:
    ids = [p.id for p in board.panels if isinstance(p, TimeSeries) and p.title.startswith(MONEY_PANELS)]
    if len(ids) != len(MONEY_PANELS):
        raise LookupError("a money panel to annotate was renamed: update MONEY_PANELS")
    return attr.evolve(board, annotations=Annotations(list=[anomaly_annotation(ids)]))


dashboard = Dashboard(
    title="BillingWatch",
    uid="billingwatch",
    description="Stripe billing health: events, charges, revenue per currency, fraud, refunds, "
    "payouts, dispute outcomes, 3-D Secure failures, Radar reviews, bad debt, "
    "subscriptions, growth (MRR movements, churn, trials), webhook delivery, anomalies and alerts (https://github.com/billingwatch/billingwatch).",
    tags=["billingwatch", "stripe", "billing"],
    timezone="browser",
    refresh="1m",
    time=Time("now-24h", "now"),
    graphTooltip=1,
    templating=Templating(list=variables()),
    panels=layout([
        ("Traffic", traffic),
        ("Charges", charges_row),
        ("Revenue (per currency)", revenue_row),
        ("Disputes, fraud and refunds", risk_row),
        ("Payouts, dispute outcomes, authentication and reviews", signals_row),
        ("Subscriptions", subscriptions_row),
        ("Growth", growth_row),
        ("Webhook delivery", delivery_row),
        ("Anomalies", anomalies_row),
        ("Alerts", alerts_row),
        ("Exporter and Redis health", health_row),
    ]),
).auto_panel_ids()
dashboard = with_annotations(dashboard)
