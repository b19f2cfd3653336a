"""The status home page: what it says of a fresh install (and the next steps), of the secret,
the mode, the last scrape and the Alertmanager push once they happen."""

import time
from collections.abc import Callable

from starlette.testclient import TestClient

from testkit.processes import wait_until
from testkit.stack import http_sink
from tests.test_anomaly_pages import duplicate


def status(client: TestClient) -> str:
    page = client.get("/")
    assert page.status_code == 200
    return page.text


def test_a_fresh_install_says_what_to_do_next(make_client: Callable[..., TestClient]) -> None:
    text = status(make_client())
    assert "no event yet" in text and "no event recorded yet" in text
    assert "stripe listen --forward-to http://localhost/webhooks/stripe" in text
    assert "billingwatch simulate --url http://localhost/webhooks/stripe --inject duplicate_charge" in text
    assert "Prometheus has not scraped this exporter" in text
    assert "No Alertmanager push" in text
    assert "in process (not shared, not durable: set REDIS_URL): ready" in text


def test_secret_mode_scrape_and_anomalies(make_client: Callable[..., TestClient]) -> None:
    placeholder = status(make_client(webhook_secrets=("whsec_replace_me",)))
    assert "a placeholder, not a Stripe signing secret: test mode only" in placeholder
    client = make_client()
    duplicate(client, "cus_alice", int(time.time()) - 60)
    client.get("/metrics")  # as Prometheus would
    text = status(client)
    assert "✓ a Stripe signing secret" in text and "test mode: 2 test event(s) in the log, no live one" in text
    assert "last scrape of /metrics 0 s ago (this process)" in text
    assert "2 recorded: charge.succeeded 2" in text
    assert 'href="/anomalies?detector=duplicate_charge&amp;range=24h">duplicate_charge 1</a>' in text
    assert "no event yet" not in text and "Prometheus has not scraped" not in text


def test_the_last_alertmanager_push_and_its_result(make_client: Callable[..., TestClient]) -> None:
    with http_sink() as alertmanager:
        client = make_client(alertmanager_urls=(alertmanager.url,), external_url="https://bw.example")
        assert f"to {alertmanager.url}; nothing pushed yet" in status(client)
        duplicate(client, "cus_alice", int(time.time()) - 60)
        wait_until(lambda: "last push" in status(client), what="the push")
        assert f"to {alertmanager.url}; last push 0 s ago: sent" in status(client)
        (pushed,) = alertmanager.received("/api/v2/alerts")[0]
        assert pushed["annotations"]["details_url"].startswith("https://bw.example/anomalies/duplicate_charge-")
