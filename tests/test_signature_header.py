"""Issue 23 a: one reading of Stripe-Signature. A header our timestamp check and the SDK would read
differently (a repeated t, a blank in a key) is refused, against a real `billingwatch serve`."""

import hashlib
import hmac
import time
from collections.abc import Iterator

import httpx
import pytest

from billingwatch.fixtures import stripe_events as se
from testkit.processes import Exporter
from tests.conftest import SECRET, running_exporter
from tests.metrics import scrape, value

TEN_YEARS = 10 * 365 * 86400


def v1(payload: bytes, timestamp: int) -> str:
    return hmac.new(SECRET.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    with running_exporter() as running:
        yield running


def post(exporter: Exporter, payload: bytes, header: str) -> httpx.Response:
    return httpx.post(exporter.url + "/webhooks/stripe", content=payload, timeout=10,
                      headers={"Stripe-Signature": header, "Content-Type": "application/json"})


@pytest.mark.parametrize("shape", [
    "t ={now},t={future},v1={sig}",   # ours read the first t (stripped), the SDK the second: 200 before
    "t={future},t ={now},v1={sig}",
    "t={future},t={now},v1={sig}",
    "t={future}, v1={sig}",           # a blank in a key: read two ways too
    "t={future},v1 ={sig},v1={sig}",
])
def test_a_header_read_two_ways_is_a_counted_400(exporter: Exporter, shape: str) -> None:
    now = int(time.time())
    future = now + TEN_YEARS
    payload = se.body(se.event("charge.succeeded", se.charge()))
    before = scrape(exporter.url)
    # The HMAC is over the future t: only a reader that takes that t and skips the future check passes it.
    response = post(exporter, payload, shape.format(now=now, future=future, sig=v1(payload, future)))
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"] and "\n" not in response.json()["error"]
    after = scrape(exporter.url)
    for result, moved in (("invalid_signature", 1), ("accepted", 0)):
        assert (value(after, "billingwatch_webhook_requests_total", result=result)
                == value(before, "billingwatch_webhook_requests_total", result=result) + moved)


def test_stripe_shaped_headers_still_pass(exporter: Exporter) -> None:
    now = int(time.time())
    payload = se.body(se.event("charge.succeeded", se.charge()))
    # Stripe's own shape: t, then a v1 per active secret (one of them ours) and maybe a v0.
    header = f"t={now},v1={'0' * 64},v1={v1(payload, now)},v0={'1' * 64}"
    response = post(exporter, payload, header)
    assert response.status_code == 200, response.text
