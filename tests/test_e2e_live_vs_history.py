"""Issue 10 end to end: every injected anomaly reaches Alertmanager; imported history pages nobody.

Two `billingwatch serve` replicas on one redis-server, a real Prometheus scraping both every
second and evaluating the shipped rules (rendered from the defaults with the group interval cut
to 1 s and every `for:` to 0; windows as shipped), the repo's Alertmanager config (short waits)
and real receivers. Traffic comes from the real commands: `billingwatch simulate` and
`billingwatch replay`, each in its own process.
"""

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from billingwatch.fixtures import stripe_events as se
from billingwatch.rules import default_config_text, load_config, render_rules
from testkit.alerting import alertmanager_config, authenticating_smtp_sink
from testkit.processes import Exporter, RedisServer, wait_until
from testkit.stack import HttpSink, Prometheus, alertmanager, http_sink, prometheus
from tests.conftest import running_exporter
from tests.replay_helpers import billingwatch, write_jsonl

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
DAY = 86400
WAIT = 60.0  # the longest any one detector may take to be notified on a loaded machine
DETECTORS = ("duplicate_charge", "negative_invoice", "currency_mismatch", "double_invoice",
             "charge_failure_spike", "fraud_spike", "refund_spike", "webhook_lag", "silent_lapse",
             # The money signals (issue 28).
             "payout_failed", "dispute_loss_rate", "authentication_failure_spike", "review_backlog")
# authentication_failure_spike compares with its 7-day baseline and stays quiet until that is whole:
# here a 5 s window over a 20 s baseline, so it can fire once the replicas have been scraped for 25 s.
AUTH_OVERRIDE = {"window": "5s", "baseline": "20s"}
AUTH_WARM_UP = "25s"
# The counters (and gauges) that recording and alerting rules read: live traffic only.
RULE_READ = (
    'job="billingwatch",__name__=~"billingwatch_(events|charges|charge_amount|charge_outcomes|charge_failures'
    "|refunds|refund_amount|disputes|dispute_amount|early_fraud_warnings|invoices_paid|invoice_paid_amount"
    "|invoice_payment_failures|subscriptions_ended|anomalies)_total"
    '|billingwatch_webhook_delivery_lag_seconds_(bucket|count|sum)|billingwatch_last_event_received_timestamp_seconds"'
)


def rules_for_test(directory: Path) -> Path:
    """The shipped rules with a 1 s group interval and every `for:` cut to 0 (windows as shipped)."""
    defaults = yaml.safe_load(default_config_text())
    sections = [name for name, value in defaults.items() if isinstance(value, dict) and "for" in value]
    override: dict[str, Any] = {"interval": "1s", **{name: {"for": "0s"} for name in sections}}
    override["authentication_failure_spike"] = {**override["authentication_failure_spike"], **AUTH_OVERRIDE}
    (directory / "rules-override.yml").write_text(yaml.safe_dump(override))
    rules = directory / "billingwatch.rules.yml"
    rules.write_text(render_rules(load_config(str(directory / "rules-override.yml"))))
    assert "for: 0s" in rules.read_text() and "for: 10m" not in rules.read_text()
    return rules


@dataclass
class Stack:
    replicas: list[Exporter]
    prometheus: Prometheus
    http: HttpSink

    def notified(self) -> dict[str, float]:
        """Each detector's first firing notification at the webhook receiver, with its time."""
        first: dict[str, float] = {}
        for at, path, body in list(self.http.requests):
            if path != "/webhook" or not isinstance(body, dict):
                continue
            for alert in body.get("alerts", []):
                detector = alert["labels"].get("detector")
                if alert["status"] == "firing" and detector:
                    first.setdefault(detector, at)
        return first

    def figures(self) -> dict[str, float]:
        return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1])
                for s in self.prometheus.query("{" + RULE_READ + "}")}


@pytest.fixture
def stack(tmp_path: Path, redis_server: RedisServer) -> Iterator[Stack]:
    rules = rules_for_test(tmp_path)
    env = {"REDIS_URL": redis_server.url, "BILLINGWATCH_REDIS_PREFIX": "e2e10" + uuid.uuid4().hex[:10]}
    with ExitStack() as stack:
        one = stack.enter_context(running_exporter(**env))
        two = stack.enter_context(running_exporter(**env))
        smtp = stack.enter_context(authenticating_smtp_sink())
        http = stack.enter_context(http_sink())
        am = stack.enter_context(alertmanager(tmp_path / "am", alertmanager_config(
            tmp_path / "amconfig", smtp, http, one.url)))
        prom = stack.enter_context(prometheus(
            tmp_path / "prom", [f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"], [rules], alertmanager=am.address))
        # Every series a rule reads exists at 0 from the start: let both replicas be scraped twice.
        prom.wait_for('count(count_over_time(billingwatch_charge_outcomes_total{status="failed",'
                      'livemode="false"}[1m]) >= 2) == 2', timeout=WAIT)
        yield Stack([one, two], prom, http)


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[e2e issue 10] {text}")


def test_every_injected_anomaly_is_notified(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    auth = 'billingwatch_payment_intent_failures_total{code="authentication_required",livemode="false"}'
    stack.prometheus.wait_for(f"count(present_over_time({auth}[1h] offset {AUTH_WARM_UP})) == 2", timeout=WAIT)
    started = time.time()
    result = billingwatch("simulate", "--url", stack.replicas[0].url, "--count", "1500", "--rate", "500",
                          "--inject", "all", "--seed", "10", timeout=120)
    sent = time.time()
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 rejected, 0 failed" in result.stdout, result.stdout

    try:
        wait_until(lambda: set(DETECTORS) <= set(stack.notified()), WAIT, what="every detector notified")
    finally:
        notified = stack.notified()
        report(capsys, f"{result.stdout.strip()}; the command ran {sent - started:.1f} s (process start "
               "included); first notification at the receiver, seconds from the command's start: "
               + ", ".join(f"{d} {notified[d] - started:.1f}" if d in notified else f"{d} MISSING"
                           for d in DETECTORS))
    assert set(DETECTORS) <= set(notified)
    firing = {(a["labels"]["alertname"], a["labels"].get("detector")) for a in stack.prometheus.alerts()
              if a["state"] == "firing"}
    for pair in [("BillingFraudSpike", "fraud_spike"), ("BillingWebhookLag", "webhook_lag"),
                 ("BillingChargeFailureSpike", "charge_failure_spike"), ("BillingRefundSpike", "refund_spike"),
                 ("BillingSilentLapse", "silent_lapse"), ("BillingAnomalyDetected", "duplicate_charge")]:
        assert pair in firing, (pair, firing)


def history_file(path: Path) -> tuple[Path, str]:
    """30 days of history: charges every day in two currencies, a dozen disputes, refunds, early
    fraud warnings, and one duplicate charge pair 20 days ago. Returns the file and the id of
    the charge that repeated the first."""
    now = int(time.time())
    events: list[dict[str, Any]] = []
    for day in range(30, 0, -1):
        for n in range(8):
            at = now - day * DAY + n * 1800
            currency = "eur" if n % 4 == 0 else "usd"
            charge = se.charge(customer=f"cus_hist_{day}_{n}", amount=1000 + 100 * n, currency=currency)
            events.append(se.event("charge.succeeded", charge, created=at))
        events.append(se.event("charge.failed", se.charge(status="failed", customer=f"cus_hist_{day}_f",
                                                          reason="insufficient_funds"), created=now - day * DAY + 600))
        if day % 3 == 0:
            events.append(se.event("refund.created", se.refund(amount=700), created=now - day * DAY + 900))
        if day % 5 == 0:
            events.append(se.event("radar.early_fraud_warning.created", se.early_fraud_warning(),
                                   created=now - day * DAY + 1200))
    for k in range(12):
        events.append(se.event("charge.dispute.created", se.dispute(amount=1500), created=now - (28 - 2 * k) * DAY))
    first, second = se.charge(customer="cus_hist_dup"), se.charge(customer="cus_hist_dup")
    events.append(se.event("charge.succeeded", first, created=now - 20 * DAY))
    events.append(se.event("charge.succeeded", second, created=now - 20 * DAY + 45))
    events.sort(key=lambda e: e["created"])
    return write_jsonl(path, events), second["id"]


def test_replayed_history_moves_no_rule_counter_and_pages_nobody(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = billingwatch("simulate", "--url", stack.replicas[1].url, "--count", "300", "--rate", "500", "--seed", "4")
    assert result.returncode == 0 and " 0 rejected, 0 failed" in result.stdout, result.stdout + result.stderr

    def scraped_twice_since(stamp: float) -> bool:
        """Both replicas scraped at least twice after `stamp`."""
        found = stack.prometheus.query(f"count(timestamp(up{{job=\"billingwatch\"}}) > {stamp + 1.5})")
        return bool(found) and float(found[0]["value"][1]) == 2

    done = time.time()
    wait_until(lambda: scraped_twice_since(done), WAIT, what="two scrapes after the live traffic")
    before = stack.figures()
    assert before and sum(v for k, v in before.items() if "billingwatch_charge_outcomes_total" in k) > 0

    history, duplicate = history_file(tmp_path / "history.jsonl")
    total = sum(1 for _ in history.open())
    result = billingwatch("replay", str(history), "--url", stack.replicas[0].url, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    replayed = time.time()
    stack.prometheus.wait_for(f'sum(max by (type, livemode) (billingwatch_history_events_total{{job="billingwatch"}}))'
                              f" == {total}", timeout=WAIT)
    wait_until(lambda: scraped_twice_since(replayed), WAIT, what="two scrapes after the replay")

    after = stack.figures()
    changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k, 0.0) != v}
    assert not changed, f"replayed history moved counters the rules read: {changed}"
    assert set(before) <= set(after)

    # A few evaluation cycles (1 s each) and Alertmanager's group_wait later, nothing fired.
    time.sleep(6)
    assert not stack.prometheus.query('ALERTS{alertname=~"Billing.*"}')
    assert not stack.http.received("/webhook"), stack.http.received("/webhook")

    anomalies = httpx.get(stack.replicas[1].url + "/api/anomalies", params={"detector": "duplicate_charge"},
                          timeout=10).json()["anomalies"]
    found = [a for a in anomalies if a.get("charge") == duplicate]
    assert len(found) == 1 and found[0]["history"] is True, anomalies
    assert abs(found[0]["event_created"] - (replayed - 20 * DAY)) < DAY
    report(capsys, f"replay of {total} history events: no rule-read counter changed ({len(after)} series), "
           "no alert; the duplicate charge of 20 days ago listed with history=true")
