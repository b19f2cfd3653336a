"""Issue 23 b, Stripe Connect: detector memory is scoped by the event's `account` (none for the
platform's own events, whose keys stay as they were), and the account is carried in anomaly
records, the event log and pushed alerts; never in a metric label. Both stores, and a real
`billingwatch serve` pushing to a real HTTP receiver."""

import time
from typing import Any

import httpx
import pytest

from billingwatch.detectors import build_detectors
from billingwatch.detectors.base import Context
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.events import parse_event
from billingwatch.recording.plan import plan_event
from billingwatch.store import Store
from testkit.stack import http_sink
from tests.conftest import SECRET, running_exporter
from tests.metrics import scrape, total
from tests.recording import anomaly_count, record

T0 = 1_790_000_000  # a fixed event time in the past: the tests never read the clock


def guest_purchase(created: int, account: str | None, fingerprint: str = "fp_shared") -> dict[str, Any]:
    """A 12.00 USD guest purchase (no customer: paired by card fingerprint) on `account`."""
    evt = se.event("charge.succeeded", se.charge(customer=None, amount=1200, currency="usd",
                                                 fingerprint=fingerprint), created=created)
    evt["account"] = account
    return evt


@pytest.mark.anyio
async def test_the_same_card_on_two_connected_accounts_is_no_duplicate(store: Store) -> None:
    await record(store, guest_purchase(T0, "acct_A"))
    outcome = await record(store, guest_purchase(T0 + 10, "acct_B"))
    assert outcome.anomalies == []
    await record(store, guest_purchase(T0 + 5, None))  # the platform's own: a third, separate payer
    assert await anomaly_count(store, "duplicate_charge") == 0


@pytest.mark.anyio
async def test_the_same_card_twice_on_one_account_is_a_duplicate_naming_the_account(store: Store) -> None:
    await record(store, guest_purchase(T0, "acct_A"))
    outcome = await record(store, guest_purchase(T0 + 10, "acct_A"))
    (found,) = outcome.anomalies
    assert found["detector"] == "duplicate_charge" and found["account"] == "acct_A"
    assert (await store.anomalies(1))[0]["account"] == "acct_A"
    assert await anomaly_count(store, "duplicate_charge") == 1
    lines = await store.events(2)
    assert [line["account"] for line in lines] == ["acct_A", "acct_A"]
    assert lines[0]["anomalies"] == ["duplicate_charge"]


@pytest.mark.anyio
async def test_platform_events_keep_their_records_and_memory(store: Store) -> None:
    await record(store, guest_purchase(T0, None))
    outcome = await record(store, guest_purchase(T0 + 10, None))
    (found,) = outcome.anomalies
    assert "account" not in found  # the platform's records are as they were
    assert (await store.events(1))[0]["account"] is None


@pytest.mark.anyio
async def test_an_account_id_cannot_reach_another_accounts_keys(store: Store) -> None:
    # Unquoted, "acct_A:dup" scoping "false:..." and "acct_A" scoping "dup:false:..." could meet.
    await record(store, guest_purchase(T0, "acct_A:x"))
    outcome = await record(store, guest_purchase(T0 + 10, "acct_A"))
    assert outcome.anomalies == []


def test_platform_detector_keys_are_exactly_as_before_and_accounts_are_scoped() -> None:
    def keys(account: str | None) -> list[str]:
        evt = guest_purchase(T0, account, fingerprint="fp_1")
        plan = plan_event(parse_event(evt), received_at=T0 + 1, detectors=build_detectors({}),
                          context=Context(state_ttl=86400), dedup_ttl=86400, subscription_ttl=86400)
        return [check.key for check in plan.checks]

    assert keys(None) == ["dup:false:card:fp_1:usd:1200"]  # the layout existing stores hold
    assert keys("acct_A") == ["acct:acct_A:dup:false:card:fp_1:usd:1200"]


def test_a_pushed_alert_and_the_event_log_name_the_account_never_a_metric_label() -> None:
    with http_sink() as alertmanager, running_exporter(BILLINGWATCH_ALERTMANAGER_URLS=alertmanager.url) as exporter:
        now = int(time.time())
        for created, account in ((now - 20, "acct_B"), (now - 15, "acct_A"), (now - 10, "acct_A")):
            payload = se.body(guest_purchase(created, account))
            response = httpx.post(exporter.url + "/webhooks/stripe", content=payload, timeout=10,
                                  headers=se.signed_headers(payload, SECRET))
            assert response.status_code == 200, response.text
        _, alerts = alertmanager.wait_for("/api/v2/alerts", lambda body: bool(body))
        (alert,) = alerts
        assert alert["annotations"]["account"] == "acct_A"
        assert "connected account acct_A" in alert["annotations"]["description"]
        assert alert["labels"]["account"] == "default"  # the configured account, never the connected one
        events = httpx.get(exporter.url + "/api/events", timeout=10).json()
        lines = events["events"] if isinstance(events, dict) else events
        assert sorted(line["account"] for line in lines) == ["acct_A", "acct_A", "acct_B"]
        samples = scrape(exporter.url)
        assert total(samples, "billingwatch_anomalies_total", detector="duplicate_charge") == 1
        assert not any("acct_" in value for _, labels in samples for _, value in labels)
