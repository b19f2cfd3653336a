"""Pushed alerts end to end (issue 18): a live anomaly reaches a person through Alertmanager in
seconds, naming who and how much, without waiting for a scrape and a rule evaluation.

Real processes on free loopback ports: redis-server, `billingwatch serve` pushing to a real
Alertmanager (the repo's config through render.sh and its templates; only the critical route's
group_wait cut from 10 s to 1 s), a real SMTP server and an HTTP receiver for the webhook and
Slack. The safety net (the rule's BillingAnomalyDetected, inhibited while the pushed alert fires)
runs on tests/test_e2e_alerting.py's stack with Prometheus and the rules.
"""

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from billingwatch.anomaly_ref import anomaly_path
from billingwatch.fixtures import stripe_events as se
from billingwatch.http.webhook import REPLAY_HEADER
from billingwatch.rules import load_config, render_rules
from testkit.alerting import RULES_OVERRIDE, alertmanager_config, authenticating_smtp_sink
from testkit.processes import Exporter, RedisServer, free_port, wait_until
from testkit.stack import (
    Alertmanager,
    HttpSink,
    Prometheus,
    SmtpSink,
    alertmanager,
    http_sink,
    prometheus,
)
from tests import metrics
from tests.conftest import SECRET, running_exporter
from tests.test_alertmanager import CONFIG
from tests.test_e2e_alerting import WAIT, email_firing, text_part, wait_scraped_twice
from tests.test_e2e_alerting import Stack as RuleStack

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
EXTERNAL_URL = "https://billingwatch.example.com"  # what the pushed alerts link to
QUIET = 4.0  # seconds: several group_intervals (1 s) of the rule stack; a second notification would show


def shipped_config(directory: Path, smtp: SmtpSink, http: HttpSink) -> Path:
    """The repo's config and templates on the sinks, with the shipped timings except the critical
    route's group_wait (10 s → 1 s). test_e2e_alerting's helper cuts every timing: put them back."""
    path = alertmanager_config(directory, smtp, http, "http://localhost:9786")
    config = yaml.safe_load(path.read_text())
    shipped = yaml.safe_load(CONFIG.read_text())["route"]
    for route, original in zip([config["route"], *config["route"]["routes"]],
                               [shipped, *shipped["routes"]], strict=True):
        for key in ("group_wait", "group_interval", "repeat_interval"):
            route.pop(key, None)
            if key in original:
                route[key] = original[key]
    critical = next(r for r in config["route"]["routes"] if r["matchers"] == ['severity="critical"'])
    assert critical["group_wait"] == "10s"
    critical["group_wait"] = "1s"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def post(exporter: Exporter, event: dict[str, Any], replay: bool = False) -> dict[str, Any]:
    payload = se.body(event)
    headers = se.signed_headers(payload, SECRET)
    if replay:
        headers[REPLAY_HEADER] = "1"  # a direct loopback request with no API token set: allowed
    response = httpx.post(exporter.url + "/webhooks/stripe", content=payload, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


def duplicate_pair(customer: str, amount: int = 2000) -> list[dict[str, Any]]:
    return [se.event("charge.succeeded", se.charge(customer=customer, amount=amount)) for _ in range(2)]


def pushed_firing(customer: str) -> Callable[[Any], bool]:
    """An Alertmanager webhook body with the pushed alert of `customer`'s finding, firing."""
    return lambda body: isinstance(body, dict) and any(
        a["status"] == "firing" and a["labels"].get("alertname") == "BillingAnomaly"
        and a["annotations"].get("customer") == customer for a in body.get("alerts", []))


def rule_firing(detector: str) -> Callable[[Any], bool]:
    return lambda body: isinstance(body, dict) and any(
        a["status"] == "firing" and a["labels"].get("alertname") == "BillingAnomalyDetected"
        and a["labels"].get("detector") == detector for a in body.get("alerts", []))


def notifications(exporter: Exporter) -> dict[str, float]:
    samples = metrics.scrape(exporter.url)
    return {r: metrics.value(samples, "billingwatch_alert_notifications_total", result=r)
            for r in ("sent", "failed", "dropped")}


@dataclass
class PushStack:
    redis: RedisServer
    smtp: SmtpSink
    http: HttpSink
    am_config: Path
    am: Alertmanager
    exporter: Exporter


@pytest.fixture(scope="module")
def push_stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[PushStack]:
    directory = tmp_path_factory.mktemp("push")
    with ExitStack() as stack:
        smtp = stack.enter_context(authenticating_smtp_sink())
        http = stack.enter_context(http_sink())
        config = shipped_config(directory / "amconfig", smtp, http)
        am = stack.enter_context(alertmanager(directory / "am", config))
        exporter = stack.enter_context(running_exporter(
            REDIS_URL=redis_server.url, BILLINGWATCH_REDIS_PREFIX="push" + uuid.uuid4().hex[:10],
            BILLINGWATCH_ALERTMANAGER_URLS=am.url, BILLINGWATCH_EXTERNAL_URL=EXTERNAL_URL))
        yield PushStack(redis_server, smtp, http, config, am, exporter)


def test_a_duplicate_charge_pages_in_seconds_naming_who_and_how_much(
    push_stack: PushStack, capsys: pytest.CaptureFixture[str]
) -> None:
    s = push_stack
    first, second = duplicate_pair("cus_push_alice", amount=4999)
    assert post(s.exporter, first)["anomalies"] == 0
    posted = time.time()
    assert post(s.exporter, second)["anomalies"] == 1
    answered = time.time() - posted

    at_webhook, body = s.http.wait_for("/webhook", pushed_firing("cus_push_alice"), timeout=WAIT)
    at_email, email = s.smtp.wait_for(
        lambda m: "BillingAnomaly: duplicate_charge" in str(m["Subject"]) and "cus_push_alice" in text_part(m),
        timeout=WAIT)
    with capsys.disabled():
        print(f"\n[push] duplicate charge: second webhook answered in {answered * 1000:.0f} ms; "
              f"to the webhook receiver {at_webhook - posted:.2f} s, to the email {at_email - posted:.2f} s "
              "(critical group_wait 1 s; no scrape, no rule evaluation)")

    assert body["receiver"] == "page"  # routed by severity like every critical alert
    pushed = next(a for a in body["alerts"] if a["annotations"].get("customer") == "cus_push_alice")
    assert pushed["labels"] == {"alertname": "BillingAnomaly", "detector": "duplicate_charge",
                                "severity": "critical", "priority": "P1", "service": "billingwatch",
                                "livemode": "false", "account": "default", "event_id": second["id"]}
    assert pushed["annotations"]["amount"] == "49.99 USD"
    # The link is the finding's own page, by its stable id (detector, mode, event, summary).
    charge_id = second["data"]["object"]["id"]
    page = EXTERNAL_URL + anomaly_path({"detector": "duplicate_charge", "livemode": False, "event_id": second["id"],
                                        "summary": f"charge {charge_id} repeats an earlier charge of the same amount"})
    assert pushed["generatorURL"] == page
    assert str(email["Subject"]).startswith("[FIRING:1] CRITICAL P1 BillingAnomaly: duplicate_charge")
    text = text_part(email)
    for fact in ("Customer: cus_push_alice", first["data"]["object"]["id"], second["data"]["object"]["id"],
                 "Amount: 49.99 USD", "Event time: ", f"Event: {second['id']} (charge.succeeded)",
                 f"Details: {page}",
                 "Runbook: https://github.com/billingwatch/billingwatch/blob/main/docs/runbooks/"
                 "BillingAnomalyDetected.md"):
        assert fact in text, (fact, text)
    html = next(p.get_payload(decode=True).decode() for p in email.walk() if p.get_content_type() == "text/html")
    assert "<td>Customer</td><td>cus_push_alice</td>" in html and "<td>Amount</td><td>49.99 USD</td>" in html
    _, slack = s.http.wait_for("/slack", lambda b: "cus_push_alice" in str(b), timeout=WAIT)
    assert "• Customer: `cus_push_alice`  • Amount: 49.99 USD" in slack["attachments"][0]["text"]
    wait_until(lambda: notifications(s.exporter)["sent"] == 1, what="the sent counter")
    assert notifications(s.exporter) == {"sent": 1, "failed": 0, "dropped": 0}


def test_alertmanager_down_when_it_happens_the_alert_still_arrives(
    push_stack: PushStack, tmp_path: Path
) -> None:
    """The push retries with backoff: Alertmanager starts 3 s after the anomaly and still gets it."""
    s = push_stack
    port = free_port()
    with running_exporter(REDIS_URL=s.redis.url, BILLINGWATCH_REDIS_PREFIX="down" + uuid.uuid4().hex[:10],
                          BILLINGWATCH_ALERTMANAGER_URLS=f"http://127.0.0.1:{port}") as exporter:
        for event in duplicate_pair("cus_push_late"):
            post(exporter, event)
        time.sleep(3.0)
        assert notifications(exporter)["sent"] == 0  # nothing could have been delivered yet
        with alertmanager(tmp_path / "am", s.am_config, port=port):
            s.http.wait_for("/webhook", pushed_firing("cus_push_late"), timeout=WAIT)
            s.smtp.wait_for(lambda m: "cus_push_late" in text_part(m), timeout=WAIT)
        assert notifications(exporter) == {"sent": 1, "failed": 0, "dropped": 0}


def test_two_replicas_one_pushed_alert_and_history_pushes_nothing(redis_server: RedisServer) -> None:
    """The store tells only the replica that recorded the event: a redelivery through the other
    replica pushes nothing. A replayed history pair finds an anomaly and pushes nothing either.
    The HTTP receiver stands in for Alertmanager, so every POST is counted."""
    prefix = "rep" + uuid.uuid4().hex[:10]
    with http_sink() as receiver, ExitStack() as stack:
        env = {"REDIS_URL": redis_server.url, "BILLINGWATCH_REDIS_PREFIX": prefix,
               "BILLINGWATCH_ALERTMANAGER_URLS": receiver.url}
        a = stack.enter_context(running_exporter(**env))
        b = stack.enter_context(running_exporter(**env))

        def pushed(customer: str) -> list[dict[str, Any]]:
            return [alert for body in receiver.received("/api/v2/alerts") for alert in body
                    if alert["annotations"].get("customer") == customer]

        first, second = duplicate_pair("cus_push_twice")
        post(a, first)
        assert post(a, second)["anomalies"] == 1
        assert post(b, second) == {"received": True, "duplicate": True, "anomalies": 0}
        assert post(a, second)["duplicate"] is True
        wait_until(lambda: bool(pushed("cus_push_twice")), WAIT, "the pushed alert")

        history = duplicate_pair("cus_push_history")
        post(b, history[0], replay=True)
        assert post(b, history[1], replay=True)["anomalies"] == 1  # found, as history
        # Control: a live pair through b afterwards is pushed, so b's sender was running.
        for event in duplicate_pair("cus_push_control"):
            post(b, event)
        wait_until(lambda: bool(pushed("cus_push_control")), WAIT, "the control alert")
        time.sleep(1.0)  # anything else queued would have been posted by now
        assert [x["labels"]["event_id"] for x in pushed("cus_push_twice")] == [second["id"]]
        assert pushed("cus_push_history") == []
        assert (notifications(a)["sent"], notifications(b)["sent"]) == (1, 1)


@pytest.fixture(scope="module")
def rule_stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Any]:
    """test_e2e_alerting's stack (Prometheus with the rules every 1 s, an 8 s anomaly window) with
    two exporters: one pushing to Alertmanager, one with the push disabled (no URL)."""
    directory = tmp_path_factory.mktemp("pushrules")
    override = directory / "rules-override.yml"
    override.write_text(yaml.safe_dump(RULES_OVERRIDE))
    rules = directory / "billingwatch.rules.yml"
    rules.write_text(render_rules(load_config(str(override))))
    with ExitStack() as stack:
        smtp = stack.enter_context(authenticating_smtp_sink())
        http = stack.enter_context(http_sink())
        am = stack.enter_context(alertmanager(directory / "am", alertmanager_config(
            directory / "amconfig", smtp, http, "http://localhost:9786")))
        quiet = stack.enter_context(running_exporter(
            REDIS_URL=redis_server.url, BILLINGWATCH_REDIS_PREFIX="q" + uuid.uuid4().hex[:10]))
        pushing = stack.enter_context(running_exporter(
            REDIS_URL=redis_server.url, BILLINGWATCH_REDIS_PREFIX="p" + uuid.uuid4().hex[:10],
            BILLINGWATCH_ALERTMANAGER_URLS=am.url))
        prom: Prometheus = stack.enter_context(prometheus(
            directory / "prom", [f"127.0.0.1:{quiet.port}", f"127.0.0.1:{pushing.port}"], [rules],
            alertmanager=am.address))
        yield am, RuleStack(quiet, prom, smtp, http), RuleStack(pushing, prom, smtp, http)


def test_without_the_push_the_rule_alerts_and_never_both_for_one_finding(rule_stack: Any) -> None:
    am, quiet, pushing = rule_stack
    for exporter in (quiet.exporter, pushing.exporter):
        wait_scraped_twice(quiet, 'billingwatch_anomalies_total{detector="duplicate_charge",livemode="false",'
                                  f'instance="127.0.0.1:{exporter.port}"}}')
    http = quiet.http

    # Push disabled: the rule's count-only alert is what arrives.
    quiet.post(*duplicate_pair("cus_rule_only"))
    http.wait_for("/webhook", rule_firing("duplicate_charge"), timeout=WAIT)
    quiet.smtp.wait_for(email_firing("BillingAnomalyDetected: duplicate_charge"), timeout=WAIT)
    assert not [b for b in http.received("/webhook") if pushed_firing("cus_rule_only")(b)]
    assert notifications(quiet.exporter) == {"sent": 0, "failed": 0, "dropped": 0}
    # Let the rule's alert resolve (8 s window), so a new finding would fire it again.
    http.wait_for("/webhook", lambda b: isinstance(b, dict) and b.get("status") == "resolved"
                  and any(a["labels"].get("alertname") == "BillingAnomalyDetected" for a in b["alerts"]),
                  timeout=WAIT)
    rule_notices = len([b for b in http.received("/webhook") if rule_firing("duplicate_charge")(b)])
    rule_emails = len([m for m in quiet.smtp.received() if email_firing("BillingAnomalyDetected")(m)])

    # Push enabled: the detailed alert arrives; the rule's alert fires too (Prometheus sends
    # it) but the inhibit rule mutes it, so the person gets one notification for the finding.
    pushing.post(*duplicate_pair("cus_rule_and_push"))
    http.wait_for("/webhook", pushed_firing("cus_rule_and_push"), timeout=WAIT)

    def rule_alert_suppressed() -> bool:
        return any(a["labels"]["alertname"] == "BillingAnomalyDetected" and a["status"]["state"] == "suppressed"
                   and a["status"]["inhibitedBy"] for a in am.alerts())

    wait_until(rule_alert_suppressed, WAIT, "the rule's alert in Alertmanager, inhibited")
    time.sleep(QUIET)
    assert len([b for b in http.received("/webhook") if rule_firing("duplicate_charge")(b)]) == rule_notices
    assert len([m for m in quiet.smtp.received() if email_firing("BillingAnomalyDetected")(m)]) == rule_emails
    assert notifications(pushing.exporter)["sent"] == 1
