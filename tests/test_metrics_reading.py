"""tests/metrics.py reads by name and labels, and a sample that is not there fails (never reads as 0)."""

from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from billingwatch.fixtures import stripe_events as se
from tests.conftest import SECRET
from tests.metrics import MissingSample, increase, scrape, total, value, value_or_none

Client = Callable[..., TestClient]
URL = "/webhooks/stripe"


def test_a_missing_sample_fails_naming_the_near_ones(make_client: Client) -> None:
    samples = scrape(make_client())
    assert value(samples, "billingwatch_webhook_requests_total", result="accepted") == 0  # exists at 0
    with pytest.raises(MissingSample, match='result="accepted"'):
        value(samples, "billingwatch_webhook_request_total", result="accepted")  # misspelt: near names listed
    with pytest.raises(MissingSample, match="billingwatch_webhook_requests_total"):
        value(samples, "billingwatch_webhook_requests_total", reslt="accepted")
    with pytest.raises(MissingSample):
        total(samples, "billingwatch_charges_totl")


def test_a_series_not_born_yet_is_none_or_counts_from_zero_but_names_are_checked(make_client: Client) -> None:
    client = make_client()
    before = scrape(client)
    assert value_or_none(before, "billingwatch_charges_total", status="succeeded", currency="usd",
                         livemode="false") is None
    with pytest.raises(MissingSample, match="no family"):
        value_or_none(before, "billingwatch_charge_total", status="succeeded")
    payload = se.body(se.event("charge.succeeded", se.charge()))
    assert client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET)).status_code == 200
    after = scrape(client)
    assert increase(before, after, "billingwatch_charges_total", currency="usd") == 1
    with pytest.raises(MissingSample, match="no label"):
        increase(before, after, "billingwatch_charges_total", curency="usd")
