"""`billingwatch simulate`: realistic traffic trips nothing; each --inject trips exactly its anomaly."""

import json
import random
from collections.abc import Iterator

import pytest

from billingwatch.cli import main
from billingwatch.commands.traffic import INJECTIONS, Traffic, stream
from tests import stripe_events as se
from tests.conftest import ROOT, Exporter, running_exporter
from tests.exporter_metrics import Samples, scrape, total

STATEFUL = ("duplicate_charge", "negative_invoice", "currency_mismatch", "double_invoice")
PACKAGE_SHAPES = ROOT / "exporter" / "billingwatch" / "commands" / "stripe_shapes"


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    with running_exporter() as running:
        yield running


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", se.SECRET)


def simulate(exporter: Exporter, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["simulate", "--url", exporter.url, "--rate", "1000", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def test_default_traffic_is_realistic_and_trips_no_detector(exporter: Exporter,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    before = scrape(exporter.url)
    out = simulate(exporter, capsys, "--count", "400", "--seed", "11")
    after = scrape(exporter.url)
    assert "400 events: 400 accepted, 0 duplicate, 0 rejected, 0 failed; 0 anomalies found" in out
    assert delta(after, before, "billingwatch_anomalies_total") == 0
    charges = delta(after, before, "billingwatch_charges_total")
    failed = delta(after, before, "billingwatch_charges_total", status="failed")
    assert charges >= 50 and 0 < failed / charges < 0.15  # some declines, well under the spike line
    assert delta(after, before, "billingwatch_charge_failures_total", reason="other") == 0  # real decline codes
    assert delta(after, before, "billingwatch_invoices_paid_total") > 0
    assert delta(after, before, "billingwatch_subscriptions", status="active") > 0
    assert delta(after, before, "billingwatch_subscriptions_lapsed") == 0
    currencies = {dict(ls)["currency"] for (n, ls), v in after.items() if n == "billingwatch_mrr_amount" and v > 0}
    assert len(currencies) >= 3  # money per currency, never summed


def assert_only(after: Samples, before: Samples, detector: str | None) -> None:
    for name in STATEFUL:
        expected = 1 if name == detector else 0
        assert delta(after, before, "billingwatch_anomalies_total", detector=name) == expected, name


@pytest.mark.parametrize("injection", list(INJECTIONS))
def test_each_injection_trips_its_anomaly_and_nothing_else(injection: str, exporter: Exporter,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    before = scrape(exporter.url)
    out = simulate(exporter, capsys, "--count", "30", "--seed", "5", "--inject", injection)
    after = scrape(exporter.url)
    assert " 0 rejected, 0 failed" in out and f"(injected: {injection})" in out
    assert_only(after, before, injection if injection in STATEFUL else None)

    def change(name: str, **labels: str) -> float:
        return delta(after, before, name, **labels)

    charges = change("billingwatch_charges_total")
    if injection == "charge_failure_spike":
        failed = change("billingwatch_charges_total", status="failed")
        assert failed >= 40 and failed / charges > 0.15  # over the alert's ratio and minimum volume
    elif injection == "fraud_spike":
        assert change("billingwatch_disputes_total", reason="fraudulent") >= 20
        assert change("billingwatch_early_fraud_warnings_total") >= 20
        assert change("billingwatch_disputes_total") / charges > 0.01
    elif injection == "refund_spike":
        assert change("billingwatch_refunds_total") >= 40
        assert change("billingwatch_refund_amount_total") > change("billingwatch_charge_amount_total",
                                                                    status="succeeded")
    elif injection == "webhook_lag":
        slow = change("billingwatch_webhook_delivery_lag_seconds_count") - change(
            "billingwatch_webhook_delivery_lag_seconds_bucket", le="600.0")
        assert slow >= 20  # delivered more than 10 minutes after Stripe created them
    elif injection == "silent_lapse":
        assert change("billingwatch_subscriptions_lapsed") == 1


def test_bounds_are_enforced(exporter: Exporter, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--rate", "5000"], ["--rate", "0"], ["--count", "2000000"], ["--duration", "100000"]):
        assert main(["simulate", "--url", exporter.url, *args]) == 2
        assert "billingwatch: --" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--inject", "no_such_anomaly"])


def test_duration_stops_the_run(exporter: Exporter, capsys: pytest.CaptureFixture[str]) -> None:
    out = simulate(exporter, capsys, "--rate", "20", "--duration", "1")
    sent = int(out.split("simulate: ")[1].split(" events")[0])
    assert 15 <= sent <= 21  # about rate x duration, never more


def test_packaged_shapes_are_the_test_shapes() -> None:
    """The simulator ships copies of tests/stripe_shapes; they must not drift."""
    for copy in sorted(PACKAGE_SHAPES.glob("*.json")):
        source = ROOT / "tests" / "stripe_shapes" / copy.name
        assert json.loads(copy.read_text()) == json.loads(source.read_text()), copy.name
    assert len(list(PACKAGE_SHAPES.glob("*.json"))) == 8


def test_events_are_stripe_shaped() -> None:
    """Every simulated event carries the full real envelope and object fields."""
    envelope = set(json.loads((ROOT / "tests" / "stripe_shapes" / "event.json").read_text()))
    events = list(stream(Traffic(random.Random(3)), 200, list(INJECTIONS)))
    kinds = {e["data"]["object"]["object"] for e in events}
    assert kinds == {"charge", "payment_intent", "invoice", "subscription", "refund", "dispute",
                     "radar.early_fraud_warning"}
    for evt in events:
        assert envelope <= set(evt) and evt["livemode"] is False
        obj = evt["data"]["object"]
        shape = obj["object"].replace("radar.", "radar_")
        real = set(json.loads((ROOT / "tests" / "stripe_shapes" / f"{shape}.json").read_text()))
        assert real - set(obj) <= {"current_period_end", "current_period_start"}, evt["type"]
    assert len({e["id"] for e in events}) == len(events)
