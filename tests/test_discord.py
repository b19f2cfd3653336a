"""Discord end to end: a real Alertmanager with the shipped config (rendered by render.sh, the
Discord URL from a secret file) posts to a local HTTP server standing in for Discord, in the
shape of Discord's execute-webhook API: JSON with `embeds`, each a title, a description and an
integer colour. Alerts are posted to Alertmanager's API, as Prometheus does."""

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from testkit.alerting import TEMPLATES, convention, local_config, write
from testkit.stack import Alertmanager, HttpSink, alertmanager, http_sink

WAIT = 45.0
RED, GREEN = 0x992D22, 0x2ECC71  # Alertmanager's Discord colours for firing and resolved
EXPORTER_URL = "http://billingwatch.example.test:9786"


@pytest.fixture(scope="module")
def sinks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Alertmanager, HttpSink]]:
    directory = tmp_path_factory.mktemp("discord")
    with http_sink() as http:
        secrets = directory / "secrets"
        secrets.mkdir()
        (secrets / "slack_api_url").write_text(http.url + "/slack\n")
        settings = (TEMPLATES / "settings.tmpl").read_text().replace("http://localhost:9786", EXPORTER_URL)
        (directory / "settings.tmpl").write_text(settings)
        config = local_config(secrets, http.url + "/webhook",
                              [str(TEMPLATES / "billingwatch.tmpl"), str(directory / "settings.tmpl")],
                              discord_url=http.url + "/discord")
        config["global"]["slack_api_url_file"] = str(secrets / "slack_api_url")
        for receiver in config["receivers"]:
            receiver.pop("email_configs", None)  # email has its own end-to-end test
        for route in [config["route"], *config["route"]["routes"]]:
            route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
        with alertmanager(directory / "am", write(directory, config)) as am:
            yield am, http


def alert(name: str, detector: str, severity: str, ends: bool = False, **labels: str) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body: dict[str, Any] = {
        "labels": convention({"alertname": name, "detector": detector, "severity": severity, "livemode": "true",
                              **labels}),
        "annotations": {"summary": f"{detector}: billing anomaly detected",
                        "description": f"1 {detector} anomalies (livemode=true) in the last 1h.",
                        "runbook_url": f"https://runbooks.example.test/{name}.md"},
        "startsAt": now,
        "generatorURL": "http://prometheus.example.test/graph?g0.expr=x",
    }
    if ends:
        body["endsAt"] = now
    return body


def slack_markup(discord: str) -> str:
    """Discord's Markdown as Slack's mrkdwn: **bold** is *bold*, [text](url) is <url|text>."""
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"<\2|\1>", discord.replace("**", "*"))


def mentions(detector: str, status: str) -> Any:
    return lambda body: isinstance(body, dict) and any(
        status in e.get("title", "") and f"Detector: `{detector}`" in e.get("description", "")
        for e in body.get("embeds", []))


def test_a_critical_anomaly_reaches_discord_in_discords_shape(sinks: tuple[Alertmanager, HttpSink]) -> None:
    am, http = sinks
    firing = alert("BillingAnomalyDetected", "duplicate_charge", "critical")
    httpx.post(am.url + "/api/v2/alerts", json=[firing], timeout=10).raise_for_status()
    _, body = http.wait_for("/discord", mentions("duplicate_charge", "FIRING"), timeout=WAIT)

    # Discord's execute-webhook JSON: content and/or embeds; an embed's title at most 256
    # characters, description at most 4096, colour an integer RGB.
    # Alertmanager 0.25 sends exactly these fields: one embed per notification, no content.
    assert set(body) == {"content", "embeds"} and body["content"] == ""
    (embed,) = body["embeds"]
    assert set(embed) == {"title", "description", "color"}
    assert isinstance(embed["title"], str) and 0 < len(embed["title"]) <= 256
    assert isinstance(embed["description"], str) and 0 < len(embed["description"]) <= 4096
    assert embed["color"] == RED
    assert embed["title"] == "[FIRING:1] CRITICAL P1 BillingAnomalyDetected: duplicate_charge - " \
                             "duplicate_charge: billing anomaly detected"
    details = f"{EXPORTER_URL}/anomalies?detector=duplicate_charge"
    for line in ("**FIRING: duplicate_charge: billing anomaly detected**",
                 "• Detector: `duplicate_charge`  • Severity: `critical (P1)`",
                 "• Value: 1 duplicate_charge anomalies (livemode=true) in the last 1h.",
                 "• Labels: livemode=true",
                 f"• [Runbook](https://runbooks.example.test/BillingAnomalyDetected.md)  • [Details]({details})"):
        assert line in [x.rstrip() for x in embed["description"].splitlines()], (line, embed["description"])

    # Slack got the same alert with the same content, in Slack's markup.
    _, slack = http.wait_for("/slack", lambda b: isinstance(b, dict) and any(
        "duplicate_charge" in a.get("text", "") for a in b.get("attachments", [])), timeout=WAIT)
    attachment = slack["attachments"][0]
    assert attachment["title"] == embed["title"]
    assert attachment["text"] == slack_markup(embed["description"])

    # Resolved: green, once the alert ends.
    httpx.post(am.url + "/api/v2/alerts", json=[alert("BillingAnomalyDetected", "duplicate_charge", "critical",
                                                      ends=True)], timeout=10).raise_for_status()
    _, body = http.wait_for("/discord", mentions("duplicate_charge", "RESOLVED"), timeout=WAIT)
    assert body["embeds"][0]["color"] == GREEN
    assert "**RESOLVED: duplicate_charge: billing anomaly detected**" in body["embeds"][0]["description"]


def test_discord_follows_slacks_routing(sinks: tuple[Alertmanager, HttpSink]) -> None:
    """warning (P2, P3: notify) reaches Discord; info (P4) goes to the email digest only, as for Slack."""
    am, http = sinks
    alerts = [alert("BillingChargeFailureSpike", "charge_failure_spike", "high"),
              alert("BillingAnomalyDetected", "negative_invoice", "medium"),
              alert("BillingWebhookLag", "webhook_lag", "low")]
    httpx.post(am.url + "/api/v2/alerts", json=alerts, timeout=10).raise_for_status()
    _, body = http.wait_for("/discord", mentions("charge_failure_spike", "FIRING"), timeout=WAIT)
    assert body["embeds"][0]["color"] == RED
    assert "[Details](http://prometheus.example.test/graph?g0.expr=x)" in body["embeds"][0]["description"]
    http.wait_for("/discord", mentions("negative_invoice", "FIRING"), timeout=WAIT)
    # The low alert reached its receiver (the webhook) while Discord and Slack stayed silent on it.
    http.wait_for("/webhook", lambda b: isinstance(b, dict) and b.get("receiver") == "digest", timeout=WAIT)
    assert not [b for b in http.received("/discord") if mentions("webhook_lag", "FIRING")(b)]
    assert not [b for b in http.received("/slack") if "webhook_lag" in str(b)]
