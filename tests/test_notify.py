"""notify/alertmanager.py: the pure mapping anomaly record → Alertmanager alert, the settings, and
the background sender against real HTTP receivers (retries, drops, counters)."""

import asyncio
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from starlette.testclient import TestClient

from billingwatch.anomaly_ref import anomaly_path
from billingwatch.config import ConfigError, Settings, from_env
from billingwatch.detectors import REGISTRY
from billingwatch.levels import alert_severity, priority
from billingwatch.money import amount_text
from billingwatch.notify import alertmanager as am
from billingwatch.notify.alertmanager import AlertSender, PushSettings, alert
from testkit.processes import free_port, wait_until
from testkit.stack import http_sink
from tests import metrics

PUSH = PushSettings(urls=(), external_url="https://billingwatch.example.com/", runbook_url="https://rb.example/runbooks/",
                    resolve_after=3900)
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def record(**overrides: Any) -> dict[str, Any]:
    """A duplicate_charge record as the store returns it (the related ids added by the store)."""
    base: dict[str, Any] = {
        "detector": "duplicate_charge", "severity": "critical", "livemode": False, "event_id": "evt_2",
        "event_type": "charge.succeeded", "event_created": 1_767_225_590,
        "summary": "charge ch_2 repeats an earlier charge of the same amount", "customer": "cus_alice",
        "charge": "ch_2", "amount": 1999, "currency": "usd", "related": ["ch_1"],
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1999, "usd", "19.99 USD"),
        (5, "eur", "0.05 EUR"),
        (500, "jpy", "500 JPY"),  # zero-decimal: already in major units
        (1234, "kwd", "1.234 KWD"),  # three-decimal
        (-500, "usd", "-5.00 USD"),  # a negative invoice
        (123_456_789, "usd", "1,234,567.89 USD"),
        (700, None, "700 (minor units)"),  # no currency: never guess the unit
    ],
)
def test_amount_in_major_units_per_currency(amount: int, currency: str | None, text: str) -> None:
    assert amount_text(amount, currency) == text


def test_alert_carries_the_facts() -> None:
    pushed = alert(record(), PUSH, NOW)
    notes = pushed["annotations"]
    assert notes["customer"] == "cus_alice"
    assert notes["objects"] == "charge ch_2; related: ch_1"
    assert notes["amount"] == "19.99 USD"
    assert notes["event_time"] == "2025-12-31T23:59:50Z" and notes["detected_at"] == "2026-01-01T00:00:00Z"
    assert notes["summary"] == ("charge ch_2 repeats an earlier charge of the same amount "
                                "(customer cus_alice, 19.99 USD)")
    assert notes["runbook_url"] == "https://rb.example/runbooks/BillingAnomalyDetected.md"
    # The details link opens the finding's own page: the two charges, the amount, the Stripe links.
    assert notes["details_url"] == "https://billingwatch.example.com" + anomaly_path(record())
    assert re.fullmatch(r"https://billingwatch\.example\.com/anomalies/duplicate_charge-[0-9a-f]{16}",
                        notes["details_url"])
    assert pushed["generatorURL"] == notes["details_url"]
    # It resolves by itself: starts now, ends after the configured time.
    assert (pushed["startsAt"], pushed["endsAt"]) == ("2026-01-01T00:00:00Z", "2026-01-01T01:05:00Z")
    assert all(isinstance(v, str) for v in notes.values())  # Alertmanager takes strings only


def test_details_link_is_the_findings_stable_id_whoever_the_payer() -> None:
    """The id comes from detector, mode, event and summary: a guest payer or an odd customer id
    changes nothing in the link, and two findings of one event differ."""
    plain = alert(record(), PUSH, NOW)["annotations"]["details_url"]
    assert alert(record(customer="card:fp_1/x"), PUSH, NOW)["annotations"]["details_url"] == plain
    assert alert(record(customer="cus_a&b=c"), PUSH, NOW)["annotations"]["details_url"] == plain
    assert alert(record(summary="another finding"), PUSH, NOW)["annotations"]["details_url"] != plain
    assert alert(record(livemode=True), PUSH, NOW)["annotations"]["details_url"] != plain


def test_an_invoice_finding_names_invoice_and_subscription() -> None:
    notes = alert(record(detector="negative_invoice", severity="medium", charge=None, related=None,
                         invoice="in_1", subscription="sub_1", amount=-500, currency="eur",
                         summary="invoice in_1 has a negative total"), PUSH, NOW)["annotations"]
    assert notes["objects"] == "invoice in_1; subscription sub_1" and notes["amount"] == "-5.00 EUR"


def test_labels_are_the_bounded_routing_set_plus_the_finding() -> None:
    """Routing labels from closed sets; the finding's event id tells two findings apart; no
    customer or charge id in any label (they are annotations)."""
    for detector in REGISTRY:
        for livemode in (True, False):
            labels = alert(record(detector=detector.name, severity=detector.severity, livemode=livemode),
                           PUSH, NOW)["labels"]
            assert labels == {"alertname": "BillingAnomaly", "detector": detector.name,
                              "severity": alert_severity(detector.severity), "priority": priority(detector.severity),
                              "service": "billingwatch", "livemode": str(livemode).lower(), "account": "default",
                              "event_id": "evt_2"}
    one, two = alert(record(), PUSH, NOW), alert(record(event_id="evt_3"), PUSH, NOW)
    assert one["labels"] != two["labels"]  # two findings, two alerts in Alertmanager


def test_settings_from_the_environment() -> None:
    settings = from_env({"BILLINGWATCH_ALERTMANAGER_URLS": " http://am-0:9093/, http://am-1:9093,http://am-0:9093",
                         "BILLINGWATCH_EXTERNAL_URL": "https://bw.example.com/",
                         "BILLINGWATCH_ALERT_RESOLVE_SECONDS": "600"})
    assert settings.alertmanager_urls == ("http://am-0:9093", "http://am-1:9093")
    pushed = am.push_settings(settings)
    assert pushed.external_url == "https://bw.example.com" and pushed.resolve_after == 600
    defaults = am.push_settings(Settings(port=9999))
    assert defaults.urls == () and defaults.external_url == "http://localhost:9999"
    assert defaults.runbook_url.endswith("/docs/runbooks") and defaults.resolve_after == 3900


@pytest.mark.parametrize("url", ["alertmanager:9093", "ftp://am", "http://", "http://am:99999",
                                 "http://am/?x=1", "http://a m", "https://user:hunter2@am:9093/#x"])
def test_a_bad_url_is_a_one_line_error_that_never_shows_it(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_env({"BILLINGWATCH_ALERTMANAGER_URLS": url})
    message = str(raised.value)
    assert message.startswith("BILLINGWATCH_ALERTMANAGER_URLS: ") and "\n" not in message
    assert "hunter2" not in message
    with pytest.raises(ConfigError, match=r"^BILLINGWATCH_EXTERNAL_URL: "):
        from_env({"BILLINGWATCH_EXTERNAL_URL": url})


def test_counter_at_zero_from_the_start(make_client: Callable[..., TestClient]) -> None:
    samples = metrics.scrape(make_client())
    for result in ("sent", "failed", "dropped"):
        assert metrics.value(samples, "billingwatch_alert_notifications_total", result=result) == 0


def counts(sender: AlertSender) -> dict[str, float]:
    return {r: sender.counter.labels(r)._value.get() for r in ("sent", "failed", "dropped")}


def test_sender_posts_to_every_alertmanager_and_skips_history() -> None:
    with http_sink() as one, http_sink() as two:
        sender = AlertSender(PushSettings((one.url, two.url + "/"), "http://bw", "http://rb", 60))

        async def run() -> None:
            await sender.start()
            sender.submit([record(history=True, event_id="evt_hist"), record()])
            await sender.stop(grace=10)

        asyncio.run(run())
        for sink in (one, two):
            posted = sink.received("/api/v2/alerts")
            assert [[a["labels"]["event_id"] for a in body] for body in posted] == [["evt_2"]]
    assert counts(sender) == {"sent": 2, "failed": 0, "dropped": 0}


def test_sender_retries_until_alertmanager_answers() -> None:
    """Nothing listens at first; the receiver starts about 1.5 s later and still gets the alert."""
    port = free_port()
    sender = AlertSender(PushSettings((f"http://127.0.0.1:{port}",), "http://bw", "http://rb", 60))
    received: list[Any] = []

    async def run() -> None:
        await sender.start()
        sender.submit([record()])
        await asyncio.sleep(1.5)
        with http_sink(port) as sink:
            await asyncio.to_thread(wait_until, lambda: bool(sink.received("/api/v2/alerts")), 30.0, "the retry")
            received.extend(sink.received("/api/v2/alerts"))
        await sender.stop()

    asyncio.run(run())
    assert len(received) == 1 and counts(sender) == {"sent": 1, "failed": 0, "dropped": 0}


def test_a_refused_alert_is_not_retried_and_counts_as_failed() -> None:
    server_paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            server_paths.append(self.path)
            self.send_response(400)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sender = AlertSender(PushSettings((f"http://127.0.0.1:{server.server_address[1]}",), "http://bw",
                                          "http://rb", 60))

        async def run() -> None:
            await sender.start()
            sender.submit([record()])
            await sender.stop(grace=10)

        asyncio.run(run())
    finally:
        server.shutdown()
        server.server_close()
    assert server_paths == ["/api/v2/alerts"]  # once: a 4xx is about the alert, not the moment
    assert counts(sender) == {"sent": 0, "failed": 1, "dropped": 0}


def test_a_full_queue_drops_and_counts() -> None:
    """submit() never waits: past the queue's bound, alerts are dropped and counted."""
    port = free_port()  # nothing listens: the sender keeps retrying its first batch
    sender = AlertSender(PushSettings((f"http://127.0.0.1:{port}",), "http://bw", "http://rb", 60))

    async def run() -> dict[str, float]:
        await sender.start()
        sender.submit([record(event_id=f"evt_{i}") for i in range(am.QUEUE_SIZE + 5)])
        seen = counts(sender)
        await sender.stop(grace=0)  # what is still queued at shutdown is dropped too
        return seen

    assert asyncio.run(run()) == {"sent": 0, "failed": 0, "dropped": 5}
    assert counts(sender)["dropped"] >= am.QUEUE_SIZE + 5 - am.BATCH
