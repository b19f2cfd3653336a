"""`billingwatch digest` against real parts: redis-server, `billingwatch serve`, Prometheus with
the project's rules (evaluated every second) and an SMTP server that requires AUTH. Events go
in as signed webhooks in two batches; the digest covers exactly the second batch (--at and
--period), and every figure in the email equals what PromQL returns for the same period."""

import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from email.message import Message
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from billingwatch.anomaly_ref import anomaly_path
from billingwatch.fixtures import stripe_events as se
from billingwatch.rules import load_config, render_rules
from testkit.alerting import SMTP_PASSWORD, SMTP_USER, authenticating_smtp_sink
from testkit.processes import Exporter, RedisServer, binary, free_port, wait_until
from testkit.stack import Prometheus, SmtpSink, prometheus
from tests.conftest import ROOT, SECRET, running_exporter
from tests.test_compose import FILLED

TOKEN = "digest-test-token-" + uuid.uuid4().hex
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@dataclass
class Stack:
    exporter: Exporter
    prometheus: Prometheus
    smtp: SmtpSink
    secrets: Path
    start: float = 0.0  # the digest's period: (start, end], the second batch exactly
    end: float = 0.0

    def post(self, *events: dict[str, Any]) -> None:
        for evt in events:
            payload = se.body(evt)
            response = httpx.post(self.exporter.url + "/webhooks/stripe", content=payload,
                                  headers=se.signed_headers(payload, SECRET), timeout=10)
            assert response.status_code == 200, response.text

    def at(self, expr: str, t: float) -> dict[tuple[tuple[str, str], ...], float]:
        reply = httpx.get(self.prometheus.url + "/api/v1/query", params={"query": expr, "time": f"{t:.3f}"},
                          timeout=10).json()
        assert reply["status"] == "success", reply
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in reply["data"]["result"]}

    def value(self, expr: str, t: float) -> float:
        """One series' value at t; 0 when it did not exist yet."""
        found = self.at(expr, t)
        assert len(found) <= 1, (expr, found)
        return next(iter(found.values()), 0.0)

    def change(self, expr: str) -> float:
        """The series' change over the period, read independently at both ends."""
        return self.value(expr, self.end) - self.value(expr, self.start)

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
        env.update({
            "PYTHONPATH": str(ROOT),
            "BILLINGWATCH_DIGEST_SMARTHOST": f"127.0.0.1:{self.smtp.port}",
            "BILLINGWATCH_DIGEST_FROM": "billingwatch@example.test",
            "BILLINGWATCH_DIGEST_TO": "finance@example.test, ops@example.test",
            "BILLINGWATCH_DIGEST_AUTH_USERNAME": SMTP_USER,
            "BILLINGWATCH_DIGEST_AUTH_PASSWORD_FILE": str(self.secrets / "smtp_password"),
            "BILLINGWATCH_DIGEST_REQUIRE_TLS": "false",  # loopback test server without TLS
            "BILLINGWATCH_API_TOKEN_FILE": str(self.secrets / "api_token"),
        })
        env.update(overrides)
        return env

    def digest(self, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "billingwatch", "digest", "--livemode", "false",
                f"--prometheus-url={self.prometheus.url}", f"--exporter-url={self.exporter.url}",
                f"--at={self.end:.3f}", f"--period={round(self.end - self.start)}s", *extra]
        return subprocess.run(args, env=self.env(**env), capture_output=True, text=True, timeout=120)


def charge_event(status: str, amount: int, currency: str, customer: str) -> dict[str, Any]:
    return se.event(f"charge.{status}", se.charge(status=status, amount=amount, currency=currency, customer=customer,
                                                   fingerprint=uuid.uuid4().hex[:16]))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("digest")
    override = directory / "rules-override.yml"
    override.write_text(yaml.safe_dump({"interval": "1s", "anomaly": {"window": "1h"}}))
    rules = directory / "billingwatch.rules.yml"
    rules.write_text(render_rules(load_config(str(override))))
    secrets = directory / "secrets"
    secrets.mkdir()
    (secrets / "smtp_password").write_text(SMTP_PASSWORD + "\n")
    (secrets / "api_token").write_text(TOKEN + "\n")
    with ExitStack() as stack:
        exporter = stack.enter_context(running_exporter(
            REDIS_URL=redis_server.url, BILLINGWATCH_REDIS_PREFIX="dg" + uuid.uuid4().hex[:10],
            BILLINGWATCH_API_TOKEN=TOKEN, BILLINGWATCH_CURRENCIES="usd,eur"))
        smtp = stack.enter_context(authenticating_smtp_sink())
        prom = stack.enter_context(prometheus(directory / "prom", [f"127.0.0.1:{exporter.port}"], [rules]))
        s = Stack(exporter, prom, smtp, secrets)
        feed(s)
        yield s


def feed(s: Stack) -> None:
    """Batch A before the period, batch B in it; each waited for until Prometheus has it."""
    usd_succeeded = 'billingwatch_charges_total{status="succeeded",currency="usd",livemode="false"}'
    s.post(charge_event("succeeded", 2000, "usd", "cus_dg_a1"), charge_event("succeeded", 2000, "usd", "cus_dg_a2"),
           charge_event("succeeded", 900, "eur", "cus_dg_a3"),
           se.event("customer.subscription.created", se.subscription(
               unit_amount=5000, customer="cus_dg_sub1", subscription_id="sub_dg_1")))
    s.prometheus.wait_for(f"{usd_succeeded} == 2", timeout=30)
    s.prometheus.wait_for('currency_livemode:billingwatch_mrr_amount:max_avg7d{currency="usd",livemode="false"} > 0')
    # A whole second: anomaly records are picked by their event's Stripe time, in whole seconds.
    s.start = math.ceil(time.time())
    time.sleep(max(0.0, s.start - time.time()))

    duplicate = se.charge(amount=4242, currency="usd", customer="cus_dg_dup", fingerprint="dupfingerprint01")
    s.post(
        charge_event("succeeded", 1000, "usd", "cus_dg_b1"), charge_event("succeeded", 1550, "usd", "cus_dg_b2"),
        charge_event("failed", 3000, "usd", "cus_dg_b3"),
        charge_event("succeeded", 1234, "eur", "cus_dg_b4"), charge_event("failed", 999, "eur", "cus_dg_b5"),
        charge_event("succeeded", 500, "jpy", "cus_dg_b6"),
        se.event("charge.succeeded", duplicate), se.event("charge.succeeded", {**duplicate, "id": se.new_id("ch")}),
        se.event("refund.created", se.refund(amount=500, currency="usd")),
        se.event("refund.created", se.refund(amount=250, currency="eur", refund_id="re_dg_fails")),
        se.event("refund.failed", se.refund(amount=250, currency="eur", refund_id="re_dg_fails", status="failed")),
        se.event("charge.dispute.created", se.dispute(amount=2000, currency="usd")),
        se.event("radar.early_fraud_warning.created", se.early_fraud_warning()),
        se.event("customer.subscription.created", se.subscription(
            unit_amount=3000, currency="eur", customer="cus_dg_sub2", subscription_id="sub_dg_2")),
        se.event("customer.subscription.deleted", se.subscription(
            status="canceled", unit_amount=5000, customer="cus_dg_sub1", subscription_id="sub_dg_1")),
        se.event("invoice.finalized", se.invoice(total=-700, customer="cus_dg_neg", billing_reason="manual")),
    )
    s.prometheus.wait_for(f"{usd_succeeded} == 6", timeout=30)
    s.prometheus.wait_for('billingwatch_subscriptions_ended_total{livemode="false"} == 1', timeout=30)
    s.prometheus.wait_for('ALERTS{alertname="BillingAnomalyDetected",alertstate="firing",'
                          'detector="duplicate_charge"}', timeout=30)
    s.prometheus.wait_for('currency_livemode:billingwatch_mrr_amount:max{currency="eur",livemode="false"} == 30')
    s.end = s.start + math.ceil(time.time() - s.start) + 1
    time.sleep(max(0.0, s.end - time.time()) + 0.5)


def parts(message: Message) -> dict[str, str]:
    found = {}
    for part in message.walk():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            # SMTP lines end in CRLF; the parts' own line ends are LF.
            found[part.get_content_type()] = payload.decode(part.get_content_charset() or "utf-8").replace("\r\n", "\n")
    return found


def section(text: str, title: str) -> list[str]:
    """The lines of one section of the plain-text digest."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return [line.strip() for line in lines[start:end]]


def money(amount: float, currency: str) -> str:
    return f"{amount:,.0f} JPY" if currency == "jpy" else f"{amount:,.2f} {currency.upper()}"


@pytest.fixture(scope="module")
def sent(stack: Stack) -> tuple[Message, str, str]:
    before = len(stack.smtp.received())
    result = stack.digest()
    assert result.returncode == 0, result.stderr
    wait_until(lambda: len(stack.smtp.received()) == before + 1, what="the digest email")
    message = stack.smtp.received()[-1]
    found = parts(message)
    return message, found["text/plain"], found["text/html"]


def test_the_email_is_multipart_text_and_html(stack: Stack, sent: tuple[Message, str, str]) -> None:
    message, text, html = sent
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.get_payload()] == ["text/plain", "text/html"]  # type: ignore[union-attr]
    assert str(message["Subject"]).startswith("BillingWatch digest ") and "test mode" in str(message["Subject"])
    assert message["To"] == "finance@example.test, ops@example.test"
    assert text.startswith("BillingWatch digest, test mode\n")
    assert html.lstrip().startswith("<!DOCTYPE html>") and "<h3>Charges</h3>" in html


def test_charges_and_failure_ratio_equal_promql(stack: Stack, sent: tuple[Message, str, str]) -> None:
    _, text, html = sent
    expected = []
    for currency in ("eur", "jpy", "usd"):
        figures = {}
        for status in ("succeeded", "failed"):
            labels = f'status="{status}",currency="{currency}",livemode="false"'
            figures[status] = (stack.change(f"billingwatch_charges_total{{{labels}}}"),
                               stack.change(f"billingwatch_charge_amount_total{{{labels}}}"))
        expected.append(f"{currency.upper()}: " + ", ".join(
            f"{n:,.0f} {status} ({money(amount, currency)})" for status, (n, amount) in figures.items()))
    # The period holds batch B and nothing of batch A (the test's own check on the PromQL side).
    assert expected == ["EUR: 1 succeeded (12.34 EUR), 1 failed (9.99 EUR)",
                        "JPY: 1 succeeded (500 JPY), 0 failed (0 JPY)",
                        "USD: 4 succeeded (110.34 USD), 1 failed (30.00 USD)"]
    failed = stack.change('billingwatch_charge_outcomes_total{status="failed",livemode="false"}')
    succeeded = stack.change('billingwatch_charge_outcomes_total{status="succeeded",livemode="false"}')
    expected.append(f"Failure ratio, all currencies: {failed / (failed + succeeded):.1%} "
                    f"({failed:,.0f} failed of {failed + succeeded:,.0f})")
    assert section(text, "Charges") == expected
    for line in expected:
        assert line in html


def test_refunds_disputes_and_fraud_warnings_equal_promql(stack: Stack, sent: tuple[Message, str, str]) -> None:
    _, text, html = sent

    def c(metric: str, currency: str) -> float:
        return stack.change(f'{metric}{{currency="{currency}",livemode="false"}}')

    eur_standing = c("billingwatch_refund_amount_total", "eur") - c("billingwatch_refund_reversed_amount_total", "eur")
    refunds = [
        f"EUR: {c('billingwatch_refunds_total', 'eur'):,.0f} refunds, {money(eur_standing, 'eur')} refunded "
        f"(after {c('billingwatch_refunds_reversed_total', 'eur'):,.0f} failed or canceled, "
        f"{money(c('billingwatch_refund_reversed_amount_total', 'eur'), 'eur')})",
        f"USD: {c('billingwatch_refunds_total', 'usd'):,.0f} refunds, "
        f"{money(c('billingwatch_refund_amount_total', 'usd'), 'usd')} refunded",
    ]
    assert refunds == ["EUR: 1 refunds, 0.00 EUR refunded (after 1 failed or canceled, 2.50 EUR)",
                       "USD: 1 refunds, 5.00 USD refunded"]
    assert section(text, "Refunds") == refunds
    disputes = stack.change('sum(billingwatch_disputes_total{livemode="false"})')
    warnings = stack.change('sum(billingwatch_early_fraud_warnings_total{livemode="false"})')
    fraud = [f"Disputes: {disputes:,.0f} ({money(c('billingwatch_dispute_amount_total', 'usd'), 'usd')})",
             f"Early fraud warnings: {warnings:,.0f}"]
    assert fraud == ["Disputes: 1 (20.00 USD)", "Early fraud warnings: 1"]
    assert section(text, "Disputes and early fraud warnings") == fraud
    for line in refunds + fraud:
        assert line in html


def test_mrr_and_subscriptions_equal_promql(stack: Stack, sent: tuple[Message, str, str]) -> None:
    _, text, _ = sent
    expected = []
    for currency in ("eur", "usd"):
        labels = f'{{currency="{currency}",livemode="false"}}'
        now = stack.value(f"currency_livemode:billingwatch_mrr_amount:max{labels}", stack.end)
        average = stack.value(f"currency_livemode:billingwatch_mrr_amount:max_avg7d{labels}", stack.end)
        assert average > 0
        expected.append(f"{currency.upper()}: {money(now, currency)}, 7-day average {money(average, currency)} "
                        f"({(now - average) / average:+.1%})")
    assert expected[0].startswith("EUR: 30.00 EUR,") and expected[1].startswith("USD: 0.00 USD,")
    assert section(text, "MRR at the end of the period") == expected
    started = stack.change('billingwatch_events_total{type="customer.subscription.created",livemode="false"}')
    ended = stack.change('billingwatch_subscriptions_ended_total{livemode="false"}')
    assert (started, ended) == (1, 1)
    assert section(text, "Subscriptions") == [f"Started: {started:,.0f}", f"Ended (canceled or expired): {ended:,.0f}"]


def test_anomalies_and_alerts_equal_promql(stack: Stack, sent: tuple[Message, str, str]) -> None:
    _, text, html = sent
    lines = section(text, "Anomalies by detector")
    headers = [line for line in lines if "/anomalies?detector=" in line and not line.startswith("    ")]
    expected = []
    for detector, priority in (("duplicate_charge", "P1"), ("negative_invoice", "P3")):
        found = stack.change(f'billingwatch_anomalies_total{{detector="{detector}",priority="{priority}",'
                             f'livemode="false"}}')
        assert found == 1
        # The detector's findings of the period and mode ('to' exclusive: the end's second is in).
        start = int(stack.end - round(stack.end - stack.start))
        period = {"detector": detector, "livemode": "false",
                  "from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                  "to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(stack.end) + 1))}
        expected.append(f"{detector} ({priority}): {found:,.0f}  "
                        f"{stack.exporter.url}/anomalies?{urlencode(period)}")
    assert headers == expected
    # Each detector's records of the period follow it, with the ids, from /api/anomalies.
    records = httpx.get(stack.exporter.url + "/api/anomalies", headers={"authorization": f"Bearer {TOKEN}"},
                        timeout=10).json()["anomalies"]
    duplicate = next(r for r in records if r["detector"] == "duplicate_charge")
    record_line = lines[lines.index(expected[0]) + 1]
    assert f"charge {duplicate['charge']}" in record_line and "customer cus_dg_dup" in record_line
    # Each record links to its own page, which the exporter serves.
    page = f"{stack.exporter.url}{anomaly_path(duplicate)}"
    assert record_line.endswith("  " + page)
    assert httpx.get(page, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10).status_code == 200
    assert f'href="{escape(expected[0].split("  ")[1])}"' in html

    # Alerts: every Billing* alert PromQL saw firing in the period, and only those.
    reply = httpx.get(stack.prometheus.url + "/api/v1/query_range", timeout=10, params={
        "query": 'ALERTS{alertstate="firing",alertname=~"Billing.*"}', "start": f"{stack.start:.3f}",
        "end": f"{stack.end:.3f}", "step": "1"}).json()
    fired = {(r["metric"]["alertname"], r["metric"].get("detector"),
              f'{r["metric"].get("severity")} {r["metric"].get("priority")}')
             for r in reply["data"]["result"] if r["metric"].get("livemode", "false") == "false"}
    assert ("BillingAnomalyDetected", "duplicate_charge", "critical P1") in fired
    listed = section(text, "Alerts that fired")
    assert len(listed) == len(fired), (listed, fired)
    for name, detector, level in fired:
        assert any(line.startswith(f"{name} {detector} ({level}) account=default livemode=false: active since ")
                   for line in listed), (name, listed)


def test_money_is_never_summed_across_currencies(sent: tuple[Message, str, str]) -> None:
    _, text, _ = sent
    for line in text.splitlines():
        codes = {code for code in ("USD", "EUR", "JPY") if code in line}
        assert len(codes) <= 1, line


def test_stdout_prints_the_same_text(stack: Stack, sent: tuple[Message, str, str]) -> None:
    _, text, _ = sent
    before = len(stack.smtp.received())
    result = stack.digest("--stdout", BILLINGWATCH_DIGEST_SMARTHOST="")  # no SMTP needed
    assert result.returncode == 0, result.stderr
    assert result.stdout == text
    assert len(stack.smtp.received()) == before


@pytest.mark.parametrize(("args", "env", "names"), [
    ((), {"BILLINGWATCH_DIGEST_SMARTHOST": "smtp.example.test"}, "BILLINGWATCH_DIGEST_SMARTHOST"),
    ((), {"BILLINGWATCH_DIGEST_TO": ""}, "BILLINGWATCH_DIGEST_TO"),
    ((), {"BILLINGWATCH_DIGEST_REQUIRE_TLS": "maybe"}, "BILLINGWATCH_DIGEST_REQUIRE_TLS"),
    ((), {"BILLINGWATCH_DIGEST_AUTH_PASSWORD_FILE": "/nonexistent/smtp_password"}, "AUTH_PASSWORD_FILE"),
    (("--period=7x",), {}, "--period"),
    (("--at=yesterday",), {}, "--at"),
    (("--prometheus-url=localhost:9090",), {}, "--prometheus-url"),
])
def test_a_bad_setting_is_a_one_line_error(stack: Stack, args: tuple[str, ...], env: dict[str, str],
                                           names: str) -> None:
    before = len(stack.smtp.received())
    result = stack.digest(*args, **env)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and names in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert len(stack.smtp.received()) == before


def test_unreachable_prometheus_or_smtp_fail_in_one_line(stack: Stack) -> None:
    before = len(stack.smtp.received())
    for result in (stack.digest(f"--prometheus-url=http://127.0.0.1:{free_port()}"),
                   stack.digest(BILLINGWATCH_DIGEST_SMARTHOST=f"127.0.0.1:{free_port()}")):
        assert result.returncode == 1, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(stack.smtp.received()) == before


def test_compose_service_sends_daily_at_the_hour(tmp_path: Path) -> None:
    """The `digest` service's loop, run by this machine's sh with date, sleep and billingwatch
    replaced by stand-ins: it sleeps until the next HH:00 UTC, sends the 24 h before it, and
    keeps going after a failed run."""
    filled = tmp_path / "filled.env"
    filled.write_text((ROOT / ".env.example").read_text() + "".join(f"{k}={v}\n" for k, v in FILLED.items()))
    resolved = subprocess.run([binary("docker-compose"), "--env-file", str(filled), "-f",
                               str(ROOT / "docker-compose.yml"), "--profile", "digest", "config"],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert resolved.returncode == 0, resolved.stderr
    service = yaml.safe_load(resolved.stdout)["services"]["digest"]
    assert service["profiles"] == ["digest"] and service["entrypoint"] == ["/bin/sh", "-c"]
    environment = service["environment"]
    assert environment["BILLINGWATCH_DIGEST_PROMETHEUS_URL"] == "http://prometheus:9090"
    assert environment["BILLINGWATCH_DIGEST_EXPORTER_URL"] == "http://exporter:9786"
    assert environment["BILLINGWATCH_DIGEST_AUTH_PASSWORD_FILE"].startswith("/run/secrets/billingwatch/")

    log = tmp_path / "log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {
        "date": "echo 1700000000",  # 2023-11-14 22:13:20 UTC
        "sleep": f'echo "sleep $1" >> {log}; [ "$(grep -c sleep {log})" -ge 2 ] && kill -TERM $PPID; exit 0',
        "billingwatch": f'echo "billingwatch $*" >> {log}; exit 1',
    }
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    (script,) = service["command"]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **{k: str(v) for k, v in environment.items()}}
    result = subprocess.run(["/bin/sh", "-c", script.replace("$$", "$")], env=env, capture_output=True, text=True,
                            timeout=30)
    next_seven = 1700000000 - 1700000000 % 86400 + 86400 + 7 * 3600  # 2023-11-15 07:00 UTC
    wait = next_seven - 1700000000
    assert log.read_text().splitlines() == [f"sleep {wait}", f"billingwatch digest --at {next_seven}", f"sleep {wait}"]
    assert "billingwatch digest failed; next run in 24h" in result.stderr
