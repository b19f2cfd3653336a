"""GET /api/events and the /events explorer page (issue 13): filters, strict parameters, the
API's authorization, escaping and the page's Content-Security-Policy."""

import base64
import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from billingwatch.fixtures import stripe_events as se
from billingwatch.store import RedisStore
from testkit.processes import free_port
from tests.test_access import REMOTE, TOKEN
from tests.test_webhook_http import post

Client = Callable[..., TestClient]




def charge(customer: str, charge_id: str, created: int | None = None, amount: int = 4999) -> dict[str, Any]:
    """A charge event, a minute old unless told (the clock read when it is built, never at import)."""
    return se.event("charge.succeeded", se.charge(customer=customer, charge_id=charge_id, amount=amount),
                    event_id=f"evt_{charge_id}", created=int(time.time()) - 60 if created is None else created)


def scenario(client: TestClient) -> None:
    """Alice is charged twice (a duplicate pair), Bob once and his invoice is paid; Stripe
    redelivers Bob's charge; one signed event is malformed (kept in the quarantine)."""
    now = int(time.time())
    for evt in (charge("cus_alice", "ch_a1", now - 70), charge("cus_alice", "ch_a2", now - 65),
                charge("cus_bob", "ch_b1", now - 50, 1500),
                se.event("invoice.paid", se.invoice(customer="cus_bob", invoice_id="in_b1"), event_id="evt_in_b1"),
                charge("cus_bob", "ch_b1", now - 50, 1500)):
        assert post(client, evt).status_code == 200
    bad = se.event("charge.succeeded", se.charge(customer="cus_carol", charge_id="ch_c1"), event_id="evt_bad")
    bad["data"]["object"]["amount"] = "12"
    assert post(client, bad).json()["quarantined"] is True


def ids(client: TestClient, query: str = "") -> list[tuple[str, str]]:
    response = client.get("/api/events" + query)
    assert response.status_code == 200, response.text
    return [(line["id"], line["result"]) for line in response.json()["events"]]


def test_events_newest_first_with_every_filter(client: TestClient, now: int) -> None:
    scenario(client)
    assert ids(client) == [("evt_bad", "quarantined"), ("evt_ch_b1", "duplicate"), ("evt_in_b1", "accepted"),
                           ("evt_ch_b1", "accepted"), ("evt_ch_a2", "accepted"), ("evt_ch_a1", "accepted")]
    assert ids(client, "?customer=cus_alice") == [("evt_ch_a2", "accepted"), ("evt_ch_a1", "accepted")]
    assert ids(client, "?type=invoice.paid") == [("evt_in_b1", "accepted")]
    assert ids(client, "?object=ch_b1") == [("evt_ch_b1", "duplicate"), ("evt_ch_b1", "accepted")]
    assert ids(client, "?customer=cus_bob&type=charge.succeeded&limit=1") == [("evt_ch_b1", "duplicate")]
    assert ids(client, "?limit=2") == [("evt_bad", "quarantined"), ("evt_ch_b1", "duplicate")]
    assert ids(client, f"?since={now + 3600}") == []
    assert len(ids(client, "?since=0&type=&customer=")) == 6  # an empty field is no filter (HTML forms)
    lines = client.get("/api/events?customer=cus_alice").json()["events"]
    assert lines[0]["anomalies"] == ["duplicate_charge"] and lines[1]["anomalies"] == []
    assert (lines[0]["object"], lines[0]["amount"], lines[0]["currency"], lines[0]["history"]) == (
        "ch_a2", 4999, "usd", False)
    (rejected,) = client.get("/api/events?customer=cus_carol").json()["events"]
    assert rejected["reason"] == "charge.amount must be an integer" and rejected["anomalies"] == []


@pytest.mark.parametrize(("query", "error"), [
    ("limit=0", "limit must be a positive integer"),
    ("limit=-1", "limit must be a positive integer"),
    ("limit=1e3", "limit must be a positive integer"),
    ("limit=%C2%B2", "limit must be a positive integer"),  # "²": isdigit() says yes
    ("limit=" + "9" * 5000, "limit must be a positive integer"),
    ("since=-5", "since must be a unix time in seconds (ASCII digits)"),
    ("since=1.5", "since must be a unix time in seconds (ASCII digits)"),
    ("since=%D9%A1%D9%A2", "since must be a unix time in seconds (ASCII digits)"),
    ("type=" + "a" * 81, "type must be at most 80 printable characters"),
    ("customer=cus%00x", "customer must be at most 255 printable characters"),
    ("customer=cus%0Ax", "customer must be at most 255 printable characters"),
    ("object=" + "o" * 256, "object must be at most 255 printable characters"),
])
def test_bad_parameters_are_one_line_400s(make_client: Client, query: str, error: str) -> None:
    client = make_client()
    response = client.get("/api/events?" + query)
    assert response.status_code == 400
    assert response.json() == {"error": error} and "\n" not in response.text
    page = client.get("/events?" + query)
    assert page.status_code == 400 and error in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("path", ["/api/events", "/events", "/events?customer=cus_alice"])
def test_refused_to_a_remote_peer_without_token(make_client: Client, path: str) -> None:
    client = make_client(peer=REMOTE)
    scenario(client)
    response = client.get(path)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert "cus_alice" not in response.text and "BILLINGWATCH_API_TOKEN" in response.text


@pytest.mark.parametrize("path", ["/api/events", "/events"])
def test_token_when_set_is_required_even_from_loopback(make_client: Client, path: str) -> None:
    local = make_client(api_token=TOKEN)
    scenario(local)
    assert local.get(path).status_code == 401
    assert local.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    remote = make_client(peer=REMOTE, api_token=TOKEN)
    scenario(remote)
    response = remote.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and "cus_alice" in response.text


def test_each_anomaly_links_to_the_explorer_on_its_customer(client: TestClient) -> None:
    scenario(client)
    (record,) = client.get("/api/anomalies").json()["anomalies"]
    assert record["explorer"] == "/events?customer=cus_alice"


def test_page_shows_the_anomaly_beside_both_charges(client: TestClient) -> None:
    scenario(client)
    html = client.get("/events").text
    rows = dict(re.findall(r'<tr class="event[^"]*" data-event="([^"]*)"[^>]*>(.*?)</tr>', html, re.S))
    assert set(rows) == {"evt_bad", "evt_ch_b1", "evt_in_b1", "evt_ch_a2", "evt_ch_a1"}
    for beside in ("evt_ch_a1", "evt_ch_a2"):
        assert 'data-detector="duplicate_charge"' in rows[beside], beside
    assert "duplicate_charge" not in rows["evt_ch_b1"] + rows["evt_in_b1"]
    assert "49.99 USD" in rows["evt_ch_a1"] and "charge.amount must be an integer" in rows["evt_bad"]
    filtered = client.get("/events?customer=cus_bob").text
    assert set(re.findall(r'data-customer="([^"]*)"', filtered)) == {"cus_bob"}


def test_page_escapes_every_value_and_allows_only_its_own_stylesheet(make_client: Client) -> None:
    client = make_client()
    evil = '"><script>alert(1)</script>'
    assert post(client, charge(evil, "ch_<img src=x onerror=alert(1)>")).status_code == 200
    response = client.get("/events?type=%3Cb%3E")  # the filter value is echoed in the form
    assert response.status_code == 200
    html = client.get("/events").text + response.text
    assert "<script>" not in html and "<img" not in html and "<b>" not in html.replace("<b>duplicate", "")
    assert "&lt;script&gt;" in html and 'value="&lt;b&gt;"' in response.text
    csp = response.headers["content-security-policy"]
    style = re.search(r"<style>(.*?)</style>", response.text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert csp == (f"default-src 'none'; style-src 'sha256-{digest}'; form-action 'self'; base-uri 'none'; "
                   "frame-ancestors 'none'")
    assert response.headers["cache-control"] == "no-store" and response.headers["referrer-policy"] == "no-referrer"
    assert "<script" not in response.text and " style=" not in response.text  # nothing the CSP would block


def test_a_store_that_cannot_log_a_rejection_does_not_change_the_answer(make_client: Client) -> None:
    """The rejected-event log line is best effort: with Redis down a signed body that is no event
    envelope still gets its one-line 400 (not a 5xx). A signed event envelope could not be kept
    in the quarantine: 503, so that Stripe retries it."""
    client = make_client(store=RedisStore(f"redis://127.0.0.1:{free_port()}", prefix="gone"))
    bad = se.event("charge.succeeded", se.charge())
    bad["created"] = "yesterday"
    response = post(client, bad)
    assert response.status_code == 400 and response.json() == {"error": "event.created must be an integer"}
    odd = se.event("charge.succeeded", se.charge())
    odd["data"]["object"]["amount"] = "12"
    response = post(client, odd)
    assert response.status_code == 503 and response.json() == {"error": "store unavailable; retry later"}
