"""The proof: a signed Stripe event reaches a person through real processes.

redis-server, `billingwatch serve`, Prometheus (scrape and evaluation every 1 s, the project's
own rules rendered from rules config with test-friendly windows), Alertmanager (the repo's
config rendered by alertmanager/render.sh, receivers pointed at the sinks, short waits), a real
SMTP server that requires AUTH (so the password file is really read) and an HTTP server
standing in for the outbound webhook and Slack's incoming webhook. All on free loopback ports.
"""

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from email.message import Message
from typing import Any

import httpx
import pytest
import yaml

from billingwatch.cli import main
from billingwatch.fixtures import stripe_events as se
from billingwatch.rules import load_config, render_rules
from testkit.alerting import (
    RULES_OVERRIDE,
    SIGNALS_WARM_UP,
    alertmanager_config,
    authenticating_smtp_sink,
    firing,
    resolved,
)
from testkit.processes import Exporter, RedisServer, wait_until
from testkit.stack import HttpSink, Prometheus, SmtpSink, alertmanager, http_sink, prometheus
from tests.conftest import SECRET, running_exporter

# Longer than scrape + evaluation + group_wait + group_interval with a wide margin for a loaded
# machine: a redelivery counted again would have been notified within it.
QUIET_SECONDS = 8.0
WAIT = 45.0  # generous timeout for each awaited notification
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@dataclass
class Stack:
    exporter: Exporter
    prometheus: Prometheus
    smtp: SmtpSink
    http: HttpSink

    def post(self, *events: dict[str, Any]) -> list[Any]:
        replies = []
        for evt in events:
            payload = se.body(evt)
            response = httpx.post(self.exporter.url + "/webhooks/stripe", content=payload,
                                  headers=se.signed_headers(payload, SECRET), timeout=10)
            assert response.status_code == 200, response.text
            replies.append(response.json())
        return replies

    def metric(self, expr: str) -> float:
        result = self.prometheus.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("e2e")
    override = directory / "rules-override.yml"
    override.write_text(yaml.safe_dump(RULES_OVERRIDE))
    rules = directory / "billingwatch.rules.yml"
    rules.write_text(render_rules(load_config(str(override))))
    with ExitStack() as stack:
        exporter = stack.enter_context(running_exporter(
            REDIS_URL=redis_server.url, BILLINGWATCH_REDIS_PREFIX="e2e" + uuid.uuid4().hex[:10]))
        smtp = stack.enter_context(authenticating_smtp_sink())
        http = stack.enter_context(http_sink())
        am = stack.enter_context(alertmanager(directory / "am", alertmanager_config(
            directory / "amconfig", smtp, http, exporter.url)))
        prom = stack.enter_context(prometheus(
            directory / "prom", [f"127.0.0.1:{exporter.port}"], [rules], alertmanager=am.address))
        yield Stack(exporter, prom, smtp, http)


def slack_firing(detector: str) -> Callable[[Any], bool]:
    return lambda body: isinstance(body, dict) and any(
        "FIRING" in a.get("title", "") and f"Detector: `{detector}`" in a.get("text", "")
        for a in body.get("attachments", []))


def email_firing(detector: str) -> Callable[[Message], bool]:
    return lambda m: str(m["Subject"]).startswith("[FIRING") and detector in str(m["Subject"])


def text_part(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("no text/plain part")


def report(capsys: pytest.CaptureFixture[str], what: str, seconds: dict[str, float]) -> None:
    """Shown in a normal run too: the latency is the figure this test exists to give."""
    with capsys.disabled():
        figures = ", ".join(f"{channel} {s:.1f} s" for channel, s in seconds.items())
        print(f"\n[e2e] {what}: POST to notification: {figures}")


def wait_scraped_twice(stack: Stack, series: str) -> None:
    """increase() needs the series' 0 before the increment: two scrapes of it."""
    stack.prometheus.wait_for(f"count_over_time({series}[1m]) >= 2", timeout=WAIT)


def test_anomalies_reach_email_webhook_and_slack_exactly_once(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    dup = 'billingwatch_anomalies_total{detector="duplicate_charge",livemode="false"}'
    neg = 'billingwatch_anomalies_total{detector="negative_invoice",livemode="false"}'
    wait_scraped_twice(stack, dup)
    wait_scraped_twice(stack, neg)

    first, second = se.charge(customer="cus_e2e_alice"), se.charge(customer="cus_e2e_alice")
    invoice = se.invoice(total=-500, customer="cus_e2e_alice", billing_reason="manual")
    events = [se.event("charge.succeeded", first), se.event("charge.succeeded", second),
              se.event("invoice.finalized", invoice)]
    posted = time.time()
    assert all("duplicate" not in reply or not reply["duplicate"] for reply in stack.post(*events))

    # The webhook: Alertmanager's own JSON, with the alert's labels.
    at_webhook, body = stack.http.wait_for("/webhook", firing("duplicate_charge"), timeout=WAIT)
    alert = next(a for a in body["alerts"] if a["labels"].get("detector") == "duplicate_charge")
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["alertname"] == "BillingAnomalyDetected"
    assert body["receiver"] == "page" and body["version"] == "4"
    assert alert["annotations"]["runbook_url"].endswith("/BillingAnomalyDetected.md")

    # The email: subject names severity and detector; the body carries every detail.
    at_email, email = stack.smtp.wait_for(email_firing("duplicate_charge"), timeout=WAIT)
    assert str(email["Subject"]).startswith("[FIRING:1] CRITICAL P1 BillingAnomalyDetected: duplicate_charge")
    text = text_part(email)
    details = f"{stack.exporter.url}/anomalies?detector=duplicate_charge"
    for expected in ("duplicate_charge: billing anomaly detected", "Detector: duplicate_charge",
                     "Severity: critical", "Value: 1 duplicate_charge anomalies",
                     "Runbook: " + alert["annotations"]["runbook_url"], "Details: " + details):
        assert expected in text, (expected, text)
    # The link leads to the page listing the one finding: the charge that repeated the first one.
    page = httpx.get(details, timeout=10).text
    assert page.count('<li class="anomaly ') == 1 and f"charge {second['id']} repeats" in page

    # Slack: an incoming-webhook message naming the detector, linking the details.
    at_slack, message = stack.http.wait_for("/slack", slack_firing("duplicate_charge"), timeout=WAIT)
    attachment = message["attachments"][0]
    assert message["channel"] == "#billing-alerts" and attachment["color"] == "danger"
    assert attachment["title_link"] == details and "<!here>" in attachment["pretext"]

    # The negative invoice (P3, warning) goes the same way, to the `notify` receiver.
    stack.http.wait_for("/webhook", firing("negative_invoice"), timeout=WAIT)
    _, neg_email = stack.smtp.wait_for(email_firing("negative_invoice"), timeout=WAIT)
    assert str(neg_email["Subject"]).startswith("[FIRING:1] WARNING P3 BillingAnomalyDetected: negative_invoice")
    report(capsys, "duplicate charge", {"webhook": at_webhook - posted, "email": at_email - posted,
                                        "slack": at_slack - posted})

    # Redelivery. Wait until both alerts resolved (the window passed), so that counting the
    # events again would fire them again, then redeliver every event.
    stack.http.wait_for("/webhook", resolved("duplicate_charge"), timeout=WAIT)
    stack.http.wait_for("/webhook", resolved("negative_invoice"), timeout=WAIT)
    assert (stack.metric(dup), stack.metric(neg)) == (1, 1)
    counts = {d: (len([b for b in stack.http.received("/webhook") if firing(d)(b)]),
                  len([b for b in stack.http.received("/slack") if slack_firing(d)(b)]),
                  len([m for m in stack.smtp.received() if email_firing(d)(m)]))
              for d in ("duplicate_charge", "negative_invoice")}
    assert counts == {"duplicate_charge": (1, 1, 1), "negative_invoice": (1, 1, 1)}
    assert all(reply["duplicate"] is True for reply in stack.post(*events))
    time.sleep(QUIET_SECONDS)
    assert (stack.metric(dup), stack.metric(neg)) == (1, 1)
    for detector, (webhooks, slacks, emails) in counts.items():
        assert len([b for b in stack.http.received("/webhook") if firing(detector)(b)]) == webhooks
        assert len([b for b in stack.http.received("/slack") if slack_firing(detector)(b)]) == slacks
        assert len([m for m in stack.smtp.received() if email_firing(detector)(m)]) == emails

    # Control: a new duplicate pair does notify again, through the same path, so the quiet
    # period above was long enough to have seen a second notification.
    stack.post(se.event("charge.succeeded", se.charge(customer="cus_e2e_bob")),
               se.event("charge.succeeded", se.charge(customer="cus_e2e_bob")))
    wait_until(lambda: len([b for b in stack.http.received("/webhook") if firing("duplicate_charge")(b)]) == 2,
               WAIT, what="a second duplicate_charge notification")
    stack.prometheus.wait_for(f"{dup} == 2", timeout=WAIT)


def test_a_rate_based_alert_takes_the_same_path(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """BillingChargeFailureSpike (a Prometheus rule over 20 s here) reaches webhook, Slack and email."""
    stack.post(se.event("charge.succeeded", se.charge(currency="eur", customer="cus_e2e_warm")))
    wait_scraped_twice(stack, 'billingwatch_charges_total{status="failed",currency="eur",livemode="false"}')

    posted = time.time()
    stack.post(*(se.event("charge.failed", se.charge(status="failed", currency="eur", customer=f"cus_e2e_f{i}",
                                                      reason="card_velocity_exceeded"))
                 for i in range(6)))
    at_webhook, body = stack.http.wait_for("/webhook", firing("charge_failure_spike"), timeout=WAIT)
    alert = next(a for a in body["alerts"] if a["labels"].get("detector") == "charge_failure_spike")
    assert (alert["labels"]["severity"], alert["labels"]["priority"]) == ("warning", "P2")
    assert body["receiver"] == "notify"
    at_slack, _ = stack.http.wait_for("/slack", slack_firing("charge_failure_spike"), timeout=WAIT)
    at_email, email = stack.smtp.wait_for(email_firing("charge_failure_spike"), timeout=WAIT)
    text = text_part(email)
    assert "Severity: warning" in text and "of charges failed in the last 20s" in text
    assert "Details: " + alert["generatorURL"] in text  # rate-based: the graph, not /api/anomalies
    report(capsys, "charge failure spike", {"webhook": at_webhook - posted, "email": at_email - posted,
                                            "slack": at_slack - posted})


SIGNALS = ("payout_failed", "dispute_loss_rate", "authentication_failure_spike", "review_backlog")


def test_simulate_inject_trips_every_money_signal_alert(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`billingwatch simulate --inject` of the four money signals (issue 28): each alert reaches the
    webhook, Slack and email, named by its detector and carrying its runbook."""
    auth = 'billingwatch_payment_intent_failures_total{code="authentication_required",livemode="false"}'
    stack.prometheus.wait_for(f"present_over_time({auth}[1h] offset {SIGNALS_WARM_UP})", timeout=120)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    posted = time.time()
    code = main(["simulate", "--url", stack.exporter.url, "--rate", "1000", "--count", "2", "--seed", "7",
                 "--inject", ",".join(SIGNALS)])
    out = capsys.readouterr().out
    assert code == 0 and " 0 rejected, 0 failed" in out, out
    latencies: dict[str, float] = {}
    for detector in SIGNALS:
        at_webhook, body = stack.http.wait_for("/webhook", firing(detector), timeout=WAIT)
        alert = next(a for a in body["alerts"] if a["labels"].get("detector") == detector)
        name = alert["labels"]["alertname"]
        assert alert["annotations"]["runbook_url"].endswith(f"/{name}.md")
        stack.http.wait_for("/slack", slack_firing(detector), timeout=WAIT)
        stack.smtp.wait_for(email_firing(detector), timeout=WAIT)
        latencies[detector] = at_webhook - posted
    assert {detector: alert_name(stack, detector) for detector in SIGNALS} == {
        "payout_failed": "BillingPayoutFailed", "dispute_loss_rate": "BillingDisputeLossRate",
        "authentication_failure_spike": "BillingAuthenticationFailureSpike", "review_backlog": "BillingReviewBacklog"}
    report(capsys, "money signals (webhook)", latencies)


def alert_name(stack: Stack, detector: str) -> str:
    body = next(b for b in stack.http.received("/webhook") if firing(detector)(b))
    return str(next(a for a in body["alerts"] if a["labels"].get("detector") == detector)["labels"]["alertname"])
