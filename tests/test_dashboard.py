"""The Grafana dashboard: committed JSON matches its grafanalib source, thresholds and selector
come from the rules config, and every panel query returns data from a real Prometheus.

The live test runs two exporter replicas on one redis-server, a Prometheus scraping both every
second and evaluating the project's rules (rendered by the same code as rules/billingwatch.rules.yml,
with a 1 s group interval instead of 1 m so the recorded series exist within seconds), posts a
scenario of signed Stripe events, then runs each panel's PromQL with the dashboard variables
filled in. The 7-day averages (revenue, MRR, early fraud warnings, event rate) are the
recorded `avg_over_time(...[7d])` series: they exist from the first evaluation, so they are
checked like the rest; their 7-day accuracy is the rules' concern (tests of issue 3).

The Growth row (issue 16) needs 30 days of history (its churn rates divide by the value 30
days ago), which no live scenario has: its queries run against a Prometheus holding 31 days of
the growth series in the exporter's shapes, backfilled with `promtool tsdb
create-blocks-from openmetrics`, and evaluating the same rules.
"""

import io
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from grafanalib._gen import loader, write_dashboard

from billingwatch.anomaly_ref import anomaly_path
from billingwatch.fixtures import stripe_events as se
from billingwatch.rules import load_config
from billingwatch.rules.rulefile import render_rules
from testkit.processes import RedisServer
from testkit.stack import Prometheus, prometheus
from tests.conftest import ROOT, SECRET, running_exporter

SOURCE = ROOT / "dashboards" / "billingwatch.dashboard.py"
RENDERED = ROOT / "dashboards" / "billingwatch.json"
# What a user would pick in Grafana for the scenario below (test-mode events in USD).
VARIABLES = {"livemode": "false", "currency": "usd", "account": "default", "__rate_interval": "1m"}


def render(monkeypatch: pytest.MonkeyPatch, config: Path | None = None) -> dict[str, Any]:
    """The dashboard as `generate-dashboard` writes it, from the defaults or from `config`."""
    if config is None:
        monkeypatch.delenv("BILLINGWATCH_RULES_CONFIG", raising=False)
    else:
        monkeypatch.setenv("BILLINGWATCH_RULES_CONFIG", str(config))
    out = io.StringIO()
    write_dashboard(loader(str(SOURCE)), out)
    rendered: dict[str, Any] = json.loads(out.getvalue())
    return rendered


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p.get("type") != "row"]


def row(dashboard: dict[str, Any], title: str) -> list[dict[str, Any]]:
    """The panels under the row `title`, up to the next row."""
    found: list[dict[str, Any]] = []
    current = None
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            current = panel["title"]
        elif current == title:
            found.append(panel)
    return found


def queries(dashboard: dict[str, Any], only: list[dict[str, Any]] | None = None) -> list[tuple[str, str]]:
    chosen = panels(dashboard) if only is None else only
    return [(f'{p["title"]} [{t["refId"]}]', t["expr"]) for p in chosen for t in p["targets"]]


def substitute(expr: str, variables: dict[str, str] = VARIABLES) -> str:
    """Fill in the dashboard variables as Grafana would; an unknown variable fails the test."""
    filled = re.sub(r"\$\{?(\w+)\}?", lambda m: variables[m.group(1)], expr)
    assert "$" not in filled, filled
    return filled


def test_committed_json_matches_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    committed = json.loads(RENDERED.read_text())
    assert render(monkeypatch) == committed, (
        "dashboards/billingwatch.json is stale: run "
        "`generate-dashboard -o dashboards/billingwatch.json dashboards/billingwatch.dashboard.py`"
    )


def test_thresholds_and_selector_come_from_the_rules_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    custom = tmp_path / "config.yml"
    custom.write_text('selector: \'job="payments-bw",namespace="billing"\'\n'
                      "charge_failure_spike: {ratio: 0.3}\nrefund_spike: {ratio: 0.25}\n")
    dashboard = render(monkeypatch, custom)
    for name, expr in queries(dashboard):
        assert 'job="payments-bw"' in expr and 'namespace="billing"' in expr, name
        assert 'job="billingwatch"' not in expr, name
    thresholds = {p["title"]: [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]
                  for p in panels(dashboard)}
    assert thresholds["Charge failure ratio (1h)"] == [None, 0.3]
    assert thresholds["Refund ratio per currency (24h)"] == [None, 0.25]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert 'job="payments-bw"' in variables["livemode"]["query"]


def test_every_panel_reads_the_datasource_variable_with_a_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    dashboard = render(monkeypatch)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert {"livemode", "currency", "account"} <= set(variables)
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel.get("title")
        for t in panel["targets"]:
            assert t["datasource"] == panel["datasource"], panel["title"]
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in panels(dashboard)}
    assert units["Charge failure ratio (1h)"] == "percentunit"
    assert units["Webhook delivery lag (30m)"] == "s"
    money = next(p for p in panels(dashboard) if p["title"] == "MRR per currency")
    assert {"matcher": {"id": "byRegexp", "options": "^usd.*$"},
            "properties": [{"id": "unit", "value": "currencyUSD"}]} in money["fieldConfig"]["overrides"]


# The pages' URL contract (issue 24): the query keys /anomalies takes.
PAGE_KEYS = {"detector", "severity", "priority", "livemode", "customer", "range", "from", "to"}
# What Grafana puts in a data link for a clicked duplicate_charge series or row.
LINK_VALUES = {"billingwatch_url:raw": "http://localhost:9786", "livemode": "false",
               "__field.labels.detector": "duplicate_charge", "__field.labels.priority": "P1",
               "__data.fields.detector": "duplicate_charge", "__data.fields.priority": "P1",
               "__from:date:iso": "2026-12-01T00:00:00.000Z", "__to:date:iso": "2026-12-02T00:00:00.000Z"}


def test_anomaly_panels_link_to_the_anomalies_page(monkeypatch: pytest.MonkeyPatch) -> None:
    dashboard = render(monkeypatch)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["billingwatch_url"]["type"] == "textbox"
    assert variables["billingwatch_url"]["current"]["value"] == "http://localhost:9786"
    linked = {p["title"]: p["fieldConfig"]["defaults"]["links"] for p in panels(dashboard)
              if p["fieldConfig"]["defaults"].get("links")}
    assert set(linked) == {"Anomalies by detector", "Anomalies in the last 24 hours",
                           "Anomalies found in imported history"}
    for title, links in linked.items():
        (link,) = links
        url = re.sub(r"\$\{([^}]+)\}", lambda m: LINK_VALUES[m.group(1)], link["url"])
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query, strict_parsing=True))
        assert (parts.scheme, parts.netloc, parts.path) == ("http", "localhost:9786", "/anomalies"), title
        assert set(query) <= PAGE_KEYS, title
        assert query["detector"] == "duplicate_charge" and query["priority"] == "P1", title
        assert query["livemode"] == "false", title
        assert ("range" in query) != ("from" in query and "to" in query), title
        assert query.get("range") == ("24h" if title == "Anomalies in the last 24 hours" else None), title
        for bound in ("from", "to"):
            if bound in query:
                datetime.fromisoformat(query[bound])  # ISO 8601, as the page parses it


def test_anomalies_are_annotations_on_the_money_panels(monkeypatch: pytest.MonkeyPatch) -> None:
    dashboard = render(monkeypatch)
    (annotation,) = dashboard["annotations"]["list"]
    assert annotation["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert "billingwatch_anomalies_total" in annotation["expr"]
    assert annotation["tagKeys"] == "detector,priority,severity"
    titles = {p["id"]: p["title"] for p in panels(dashboard)}
    annotated = sorted(titles[i] for i in annotation["filter"]["ids"])
    assert annotated == sorted(t for t in titles.values() if t.startswith((
        "Charged volume per currency", "MRR per currency", "Refund ratio per currency",
        "Refunded amount per currency", "Net new MRR", "ARPU")))
    assert annotation["filter"]["exclude"] is False


def post(url: str, event: dict[str, Any], history: bool = False) -> httpx.Response:
    payload = se.body(event)
    headers = {**se.signed_headers(payload, SECRET), **({"BillingWatch-Replay": "1"} if history else {})}
    return httpx.post(url + "/webhooks/stripe", content=payload, headers=headers, timeout=10)


def history() -> list[dict[str, Any]]:
    """Imported history (as `billingwatch replay` sends it): a duplicate charge 20 days ago."""
    then = int(time.time()) - 20 * 86400
    return [se.event("charge.succeeded", se.charge(customer="cus_past"), created=then),
            se.event("charge.succeeded", se.charge(customer="cus_past"), created=then + 30)]


def scenario() -> list[dict[str, Any]]:
    """A morning of test-mode billing: charges (one failed, one duplicated), a refund, a dispute,
    an early fraud warning, invoices paid and failed, subscriptions (one lapsed), and the money
    signals (payouts, a lost dispute, a 3-D Secure failure, an open review, bad debt). The
    history below is imported after it."""
    now = int(time.time())
    first, second = se.charge(customer="cus_dash"), se.charge(customer="cus_dash")
    return [
        se.event("charge.succeeded", first, created=now - 40),
        se.event("charge.succeeded", second, created=now - 20),  # same customer and amount: duplicate_charge
        se.event("charge.succeeded", se.charge(customer="cus_eve", amount=5000), created=now - 30),
        se.event("charge.failed", se.charge(status="failed", customer="cus_mallory", reason="stolen_card")),
        se.event("charge.refunded", se.charge(customer="cus_eve", amount=5000)),
        se.event("refund.created", se.refund(amount=1500)),
        se.event("charge.dispute.created", se.dispute(amount=2000)),
        se.event("radar.early_fraud_warning.created", se.early_fraud_warning()),
        se.event("customer.subscription.created", se.subscription(subscription_id="sub_dash", customer="cus_dash")),
        se.event("customer.subscription.created", se.subscription(
            subscription_id="sub_lapsed", customer="cus_late", unit_amount=1000, period_end=now - 5 * 86400)),
        se.event("customer.subscription.created", se.subscription(
            subscription_id="sub_trial", customer="cus_trial", status="trialing", trial_start=now - 3600,
            trial_end=now + 13 * 86400)),
        se.event("customer.subscription.updated", se.subscription(
            subscription_id="sub_converted", customer="cus_converted", trial_start=now - 15 * 86400,
            trial_end=now - 3600)),  # its trial converted: active, 20 USD a month
        se.event("invoice.paid", se.invoice(customer="cus_dash", subscription="sub_dash")),
        se.event("invoice.payment_failed", se.invoice(
            customer="cus_late", subscription="sub_lapsed", status="open", attempt_count=2)),
        # The money signals: a payout paid and one failed, a lost dispute, a 3-D Secure failure,
        # a review waiting for an hour, an invoice written off.
        se.event("payout.paid", se.payout(amount=90000)),
        se.event("payout.failed", se.payout(status="failed", failure_code="account_closed")),
        se.event("charge.dispute.closed", {**se.dispute(amount=2000), "status": "lost"}),
        se.event("payment_intent.payment_failed", se.payment_intent_failed(customer="cus_sca")),
        se.event("review.opened", se.review(created=now - 3600)),
        se.event("invoice.marked_uncollectible", se.invoice(customer="cus_late", status="uncollectible")),
    ]


@pytest.fixture
def stack(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Prometheus, list[str]]]:
    """Two exporter replicas sharing redis-server, scraped by Prometheus with the project's rules."""
    override = tmp_path / "rules-config.yml"
    override.write_text("interval: 1s\n")
    rules = tmp_path / "billingwatch.rules.yml"
    rules.write_text(render_rules(load_config(str(override))))
    env = {"REDIS_URL": redis_server.url, "BILLINGWATCH_REDIS_PREFIX": "dash" + uuid.uuid4().hex[:10]}
    with running_exporter(**env) as one, running_exporter(**env) as two, prometheus(
        tmp_path / "prometheus", [f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"], rule_files=[rules],
    ) as prom:
        yield prom, [one.url, two.url]


def test_every_panel_query_returns_data(monkeypatch: pytest.MonkeyPatch, stack: tuple[Prometheus, list[str]]) -> None:
    prom, urls = stack
    dashboard = render(monkeypatch)
    # Both replicas scraped before any event, so counters exposed at 0 (anomalies) are seen
    # rising, as increase() needs.
    prom.wait_for('count(billingwatch_anomalies_total{job="billingwatch"} == 0) > 0')
    prom.wait_for('count(up{job="billingwatch"} == 1) == 2')
    events = scenario()
    for i, event in enumerate(events):
        reply = post(urls[i % 2], event)  # spread over both replicas, as a load balancer would
        assert reply.status_code == 200, reply.text
    assert post(urls[0], events[0]).json().get("duplicate") is True  # a redelivery
    # Someone marks the duplicate charge a false positive (the precision panel reads the verdicts).
    (found,) = httpx.get(urls[0] + "/api/anomalies", timeout=10).json()["anomalies"]
    marked = httpx.post(urls[1] + anomaly_path(found) + "/feedback", data={"verdict": "false_positive"},
                        headers={"Sec-Fetch-Site": "same-origin"}, timeout=10)
    assert marked.status_code == 303, marked.text
    for event in history():
        reply = post(urls[1], event, history=True)
        assert reply.status_code == 200, reply.text

    # The variables' own queries (Grafana's label_values) offer the values the test picks.
    for variable in dashboard["templating"]["list"]:
        found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
        if found:
            series = prom.wait_for(substitute(found.group(1)))
            assert VARIABLES[variable["name"]] in {s["metric"].get(found.group(2)) for s in series}

    # Each query either errors at once (Prometheus.query raises on a PromQL error) or must
    # return data within a few rule evaluations. The Growth row has its own test below (it
    # needs 30 days of history).
    growth = set(queries(dashboard, [p for p in row(dashboard, "Growth") if p["title"] == "Churn rates (30d)"]))
    assert growth
    empty = []
    for name, expr in queries(dashboard):
        if (name, expr) in growth:
            continue
        try:
            prom.wait_for(substitute(expr), timeout=15)
        except TimeoutError:
            empty.append(f"{name}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)

    # Global figures are the same on both replicas: the panels take the max, so two replicas
    # read as one (a sum would double them).
    def value(title: str) -> dict[str, float]:
        (expr,) = [e for n, e in queries(dashboard) if n.startswith(title + " [A]")]
        return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in prom.query(substitute(expr))}

    # sub_dash, sub_lapsed and sub_converted active; sub_trial trialing
    assert sorted(value("Subscriptions by status").values()) == [1.0, 3.0]
    assert list(value("Lapsed subscriptions").values()) == [1.0]
    assert list(value("MRR per currency").values()) == [50.0]  # 20 + 10 + 20 USD a month
    assert list(value("Exporter targets up").values()) == [2.0]
    assert list(value("Detector precision (30 d)").values()) == [0.0]  # its one verdict: a false positive
    anomalies = prom.query(substitute(dict(queries(dashboard))["Anomalies in the last 24 hours [A]"]))
    assert {s["metric"]["detector"] for s in anomalies} == {"duplicate_charge"}
    found = prom.query(substitute(dict(queries(dashboard))["Anomalies found in imported history [A]"]))
    assert {s["metric"]["detector"] for s in found if float(s["value"][1]) > 0} == {"duplicate_charge"}
    # The anomaly annotation marks the duplicate charge on the money panels.
    (annotation,) = dashboard["annotations"]["list"]
    marks = prom.wait_for(substitute(annotation["expr"]))
    assert {s["metric"]["detector"] for s in marks} == {"duplicate_charge"}
    alerts = prom.wait_for(substitute(dict(queries(dashboard))["Alerts firing or pending [A]"]))
    assert {(a["metric"]["alertname"], a["metric"].get("detector")) for a in alerts} >= {
        ("BillingAnomalyDetected", "duplicate_charge")}


# --- the Growth row, against 31 days of backfilled history ---

# "All" accounts: the history below is of a release before the account label.
GROWTH_VARIABLES = {"livemode": "false", "currency": "usd", "account": ".*", "__rate_interval": "2h"}
HOUR = 3600
DAYS = 31


def growth_history(now: int) -> str:
    """31 days of the growth families (docs/metrics.md shapes), one sample an hour up to `now`, as
    OpenMetrics. USD on two replicas (the panels take the max): MRR gained 10 (new), 2
    (expansion), 1 (reactivation) and lost 1 (contraction), 1 (churn) an hour; one customer
    churns an hour; 2400 paying customers and 48000 MRR until 15 days ago, 2000 and 40000 since.
    EUR apart (9000 MRR, 30 customers). Trials: 2 started, 3 converted, 1 expired an hour."""
    times = [now - k * HOUR for k in range(DAYS * 24, -1, -1)]
    step_at = now - 15 * 86400

    def series(name: str, labels: str, value: Any) -> str:
        return "".join(f"{name}{{{labels}}} {value(t)} {t}\n" for t in times)

    def counter(per_hour: float) -> Any:
        return lambda t: per_hour * (t - times[0]) / HOUR

    def before_after(old: float, new: float) -> Any:
        return lambda t: old if t < step_at else new

    base = 'job="billingwatch",livemode="false"'
    text = ""
    for instance in ("a:9786", "b:9786"):
        for kind, per_hour in (("new", 10), ("expansion", 2), ("reactivation", 1), ("contraction", 1), ("churn", 1)):
            text += series("billingwatch_mrr_movement_amount_total",
                           f'{base},instance="{instance}",kind="{kind}",currency="usd"', counter(per_hour))
    for kind in ("new", "expansion", "contraction", "churn", "reactivation"):
        text += series("billingwatch_customer_movements_total",
                       f'{base},instance="a:9786",kind="{kind}",currency="usd"', counter(1 if kind == "churn" else 0))
    usd, eur = f'{base},instance="a:9786",currency="usd"', f'{base},instance="a:9786",currency="eur"'
    text += series("billingwatch_paying_customers", usd, before_after(2400, 2000))
    text += series("billingwatch_paying_customers", eur, lambda t: 30)
    text += series("billingwatch_mrr_amount", usd, before_after(48000, 40000))
    text += series("billingwatch_mrr_amount", eur, lambda t: 9000)
    text += series("billingwatch_mrr_by_plan_amount", f'{usd},plan="pro"', before_after(36000, 30000))
    text += series("billingwatch_mrr_by_plan_amount", f'{usd},plan="other"', before_after(12000, 10000))
    text += series("billingwatch_subscriptions", f'{base},instance="a:9786",status="trialing"', lambda t: 7)
    text += series("billingwatch_trials_started_total", f'{base},instance="a:9786"', counter(2))
    for outcome, per_hour in (("converted", 3), ("expired", 1)):
        text += series("billingwatch_trials_ended_total", f'{base},instance="a:9786",outcome="{outcome}"',
                       counter(per_hour))
    return text + "# EOF\n"


@pytest.fixture
def history_prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus over 31 days of backfilled growth series, evaluating the project's rules every second."""
    directory = tmp_path / "prometheus"
    (directory / "data").mkdir(parents=True)
    source = tmp_path / "growth.om"
    source.write_text(growth_history(int(time.time())))
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found (Debian package prometheus)"
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(directory / "data")],
                   check=True, capture_output=True, timeout=300)
    override = tmp_path / "rules-config.yml"
    override.write_text("interval: 1s\n")
    rules = tmp_path / "billingwatch.rules.yml"
    rules.write_text(render_rules(load_config(str(override))))
    # The default retention (15 days) would drop the older blocks at start.
    with prometheus(directory, [], rule_files=[rules], args=["--storage.tsdb.retention.time=90d"]) as prom:
        yield prom


def test_growth_panels_read_backfilled_history(monkeypatch: pytest.MonkeyPatch,
                                               history_prometheus: Prometheus) -> None:
    prom = history_prometheus
    dashboard = render(monkeypatch)
    growth = row(dashboard, "Growth")
    assert {p["title"] for p in growth} >= {"MRR movements per day ($currency)", "Net new MRR", "Churn rates (30d)",
                                            "ARPU and paying customers", "MRR by plan ($currency)", "Trials"}
    # Stacks of money are one panel per currency (a stack across currencies would add them up).
    assert {p["title"]: p.get("repeat") for p in growth if "$currency" in p["title"]} == {
        "MRR movements per day ($currency)": "currency", "MRR by plan ($currency)": "currency"}

    checked: set[str] = set()

    def values(title: str) -> dict[str, float]:
        """Each target's samples by legend (refId and the labels the legend names)."""
        (panel,) = [p for p in growth if p["title"] == title]
        found: dict[str, float] = {}
        for t in panel["targets"]:
            checked.add(f'{title} [{t["refId"]}]')
            samples = prom.wait_for(substitute(t["expr"], GROWTH_VARIABLES), timeout=20)
            for sample in samples:
                labels = sample["metric"]
                legend = re.sub(r"\{\{(\w+)\}\}", lambda m, labels=labels: labels.get(m.group(1), "?"),
                                t["legendFormat"])
                found[f'{t["refId"]} {legend}'] = float(sample["value"][1])
        return found

    def approx(expected: dict[str, float]) -> Any:
        return pytest.approx(expected, rel=1e-6)

    assert values("MRR movements per day ($currency)") == approx({
        "A usd new": 240, "A usd expansion": 48, "A usd reactivation": 24,  # two replicas: max, not sum
        "B usd contraction": -24, "B usd churn": -24})  # losses drawn below zero
    assert values("Net new MRR") == approx({"A usd last 1d": 264, "B usd daily average over 30d": 264})
    # Divided by the values 30 days ago (2400 customers, 48000 MRR), not today's.
    assert values("Churn rates (30d)") == approx({"A usd logo churn": 720 / 2400, "B usd revenue churn": 1440 / 48000})
    assert values("ARPU and paying customers") == approx({"A usd ARPU": 20, "B paying customers (usd)": 2000})
    assert values("MRR by plan ($currency)") == approx({"A usd pro": 30000, "A usd other": 10000})
    assert values("Trials") == approx({"A trialing": 7, "B started (last 24h)": 48,
                                       "C converted (last 24h)": 72, "C expired (last 24h)": 24})
    assert values("Trial conversion (7d)") == approx({"A converted / ended trials": 0.75, "B 28d average": 0.75,
                                                      "C alert line": 0.525})
    # Every query of the row was checked above.
    assert checked == {name for name, _ in queries(dashboard, growth)}
