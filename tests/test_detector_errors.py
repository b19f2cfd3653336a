"""A detector that raises (a bug, often in a plugin) never costs the event: it is recorded and
counted without that detector's checks, the failure is logged on one line and counted per
detector; a malformed event (InvalidEvent) is still refused whole."""

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from starlette.testclient import TestClient

import billingwatch.detectors as detectors_module
from billingwatch.detectors import REGISTRY, Context, Severity
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.events import Event, InvalidEvent
from billingwatch.recording.plan import Check
from tests.conftest import SECRET
from tests.metrics import parse, value

URL = "/webhooks/stripe"


@dataclasses.dataclass(frozen=True)
class Broken:
    name: ClassVar[str] = "broken_check"
    severity: ClassVar[Severity] = "low"
    description: ClassVar[str] = "Raises on every charge (a bug), or says the event is malformed."
    event_types: ClassVar[frozenset[str]] = frozenset({"charge.succeeded"})

    def checks(self, event: Event, context: Context) -> list[Check]:
        if event.object.get("description") == "malformed":
            raise InvalidEvent("charge.description says malformed")
        raise KeyError("a bug")


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, make_client: Callable[..., TestClient]) -> TestClient:
    monkeypatch.setattr(detectors_module, "REGISTRY", (*REGISTRY, Broken))
    return make_client()


def post(client: TestClient, evt: dict[str, Any]) -> Any:
    payload = se.body(evt)
    return client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET))


def test_a_raising_detector_costs_nothing_but_its_own_checks(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    figures = parse(client.get("/metrics").text)
    assert value(figures, "billingwatch_detector_errors_total", detector="broken_check") == 0  # exists at 0
    first = se.event("charge.succeeded", se.charge(charge_id="ch_a", customer="cus_err"))
    second = se.event("charge.succeeded", se.charge(charge_id="ch_b", customer="cus_err"))
    with caplog.at_level(logging.ERROR, logger="billingwatch"):
        answers = [post(client, first), post(client, second), post(client, first)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[1].json()["anomalies"] == 1  # the other detectors still ran: a duplicate charge
    assert answers[2].json()["duplicate"] is True
    figures = parse(client.get("/metrics").text)
    assert value(figures, "billingwatch_charges_total", status="succeeded", currency="usd", livemode="false") == 2
    # Counted per event recorded, not per redelivery.
    assert value(figures, "billingwatch_detector_errors_total", detector="broken_check") == 2
    assert value(figures, "billingwatch_detector_errors_total", detector="duplicate_charge") == 0
    lines = [r.getMessage() for r in caplog.records if "broken_check" in r.getMessage()]
    assert len(lines) == 2 and all("\n" not in line and "Traceback" not in line for line in lines)
    assert all(r.exc_info is None for r in caplog.records)


def test_a_detector_saying_the_event_is_malformed_still_refuses_it(client: TestClient) -> None:
    """Refused means not recorded: the signed event is kept in the quarantine (tests/test_quarantine.py)."""
    charge = se.charge()
    charge["description"] = "malformed"
    answer = post(client, se.event("charge.succeeded", charge))
    assert answer.status_code == 200 and "malformed" in answer.json()["reason"]
    figures = parse(client.get("/metrics").text)
    assert value(figures, "billingwatch_charge_outcomes_total", status="succeeded", livemode="false") == 0
    assert value(figures, "billingwatch_webhook_requests_total", result="quarantined") == 1
    assert value(figures, "billingwatch_detector_errors_total", detector="broken_check") == 0
