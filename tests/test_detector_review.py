"""Issue 23 f and g, against both stores: currency_mismatch reads invoice payments too (once per
payment), and double_invoice's record carries the gap between the two invoices."""

import itertools
import re
from pathlib import Path

import httpx
import pytest

from billingwatch.detectors import REGISTRY
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.plan import Anomaly, Check, Plan
from billingwatch.store import Store
from tests.conftest import SECRET, running_exporter
from tests.recording import anomaly_count, record

T0 = 1_790_000_000  # a fixed event time in the past: the tests never read the clock
anyio = pytest.mark.anyio


# ------------------------------------------------------------------ double_invoice: the gap


@anyio
async def test_double_invoice_details_carry_the_gap_between_the_invoices(store: Store) -> None:
    first = se.invoice(invoice_id="in_gap1", subscription="sub_gap", created=T0)
    second = se.invoice(invoice_id="in_gap2", subscription="sub_gap", created=T0 + 3 * 3600 + 7)
    await record(store, se.event("invoice.created", first, created=T0))
    outcome = await record(store, se.event("invoice.finalized", second, created=T0 + 4 * 3600))
    (found,) = outcome.anomalies
    assert found["detector"] == "double_invoice" and found["related"] == ["in_gap1"]
    assert found["details"] == {"gap_seconds": 3 * 3600 + 7}  # invoice time, not event time
    assert (await store.anomalies(1))[0]["details"] == {"gap_seconds": 3 * 3600 + 7}


@anyio
async def test_double_invoice_gap_is_to_the_nearest_invoice_in_either_order(store: Store) -> None:
    for invoice_id, offset in (("in_n1", 0), ("in_n3", 20 * 3600)):
        inv = se.invoice(invoice_id=invoice_id, subscription="sub_near", created=T0 + offset)
        await record(store, se.event("invoice.created", inv, created=T0 + offset))
    # Delivered late, created between the two: 2 h after the first, 18 h before the other.
    middle = se.invoice(invoice_id="in_n2", subscription="sub_near", created=T0 + 2 * 3600)
    outcome = await record(store, se.event("invoice.created", middle, created=T0 + 2 * 3600))
    found = [a for a in outcome.anomalies if a["detector"] == "double_invoice"]
    assert [a["details"] for a in found] == [{"gap_seconds": 2 * 3600}]
    assert await anomaly_count(store, "double_invoice") == 2  # the pair (in_n1, in_n3) fired first


@anyio
@pytest.mark.parametrize("details", [None, {}, {"big": 2**60 + 1, "nested": {}, "list": [1.5, "a"]}])
async def test_a_window_gap_joins_the_details_the_detector_gave(store: Store,
                                                              details: dict[str, object] | None) -> None:
    def plan(event_id: str, member: str, at: int) -> Plan:
        found = Anomaly(detector="double_invoice", severity="high", livemode=False, event_id=event_id,
                        event_type="invoice.created", event_created=at, summary="s", details=details)
        return Plan(event_id=event_id, dedup_ttl=3600, checks=[Check(
            op="window", key="gaptest", member=member, at=at, window=100, ttl=3600, gap_detail="gap_seconds",
            anomaly=found)])

    assert (await store.apply(plan("evt_g1", "m1", T0))).anomalies == []
    (found,) = (await store.apply(plan("evt_g2", "m2", T0 - 42))).anomalies
    # Numbers beyond a double's precision and empty objects come back exactly (cjson never sees them).
    assert found["details"] == {**(details or {}), "gap_seconds": 42}
    assert (await store.anomalies(1))[0]["details"] == found["details"]


def test_a_gap_detail_that_is_no_plain_key_is_refused() -> None:
    with pytest.raises(ValueError, match="gap_detail"):
        Check(op="window", key="k", ttl=1, gap_detail='a"b')


# ------------------------------------------------------------------ currency_mismatch: invoices


def paid_invoice(event_type: str, created: int, **kw: object) -> dict[str, object]:
    kw = {"subscription": None, "billing_reason": "manual", **kw}  # no double_invoice
    inv = se.invoice(created=created, **kw)  # type: ignore[arg-type]
    return se.event(event_type, inv, created=created)


@anyio
@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_succeeded"])
async def test_invoice_payments_alone_are_checked(store: Store, event_type: str) -> None:
    await record(store, paid_invoice(event_type, T0, customer="cus_inv", currency="usd", invoice_id="in_usd"))
    outcome = await record(store, paid_invoice(event_type, T0 + 86400, customer="cus_inv", currency="eur",
                                               invoice_id="in_eur", total=1234))
    (found,) = outcome.anomalies
    assert found["detector"] == "currency_mismatch" and found["related"] == ["usd"]
    assert (found["customer"], found["invoice"], found["currency"], found["amount"]) == (
        "cus_inv", "in_eur", "eur", 1234)


@anyio
@pytest.mark.parametrize("order", list(itertools.permutations(["charge", "invoice.paid", "invoice.payment_succeeded"])))
async def test_one_payment_reported_by_its_charge_and_its_invoice_counts_once(store: Store,
                                                                              order: tuple[str, ...]) -> None:
    await record(store, se.event("charge.succeeded", se.charge(customer="cus_both", currency="usd"), created=T0))
    events = {
        "charge": se.event("charge.succeeded", se.charge(customer="cus_both", currency="gbp", charge_id="ch_gbp"),
                           created=T0 + 100),
        "invoice.paid": paid_invoice("invoice.paid", T0 + 101, customer="cus_both", currency="gbp",
                                     invoice_id="in_gbp"),
        "invoice.payment_succeeded": paid_invoice("invoice.payment_succeeded", T0 + 101, customer="cus_both",
                                                  currency="gbp", invoice_id="in_gbp"),
    }
    for name in order:
        await record(store, events[name])
    assert await anomaly_count(store, "currency_mismatch") == 1


@anyio
async def test_an_invoice_settled_without_payment_is_no_currency_of_the_customer(store: Store) -> None:
    await record(store, paid_invoice("invoice.paid", T0, customer="cus_zero", currency="usd"))
    await record(store, paid_invoice("invoice.paid", T0 + 5, customer="cus_zero", currency="eur", total=0))
    assert await anomaly_count(store, "currency_mismatch") == 0


def test_docs_name_the_events_each_detector_reads() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "detectors.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.+?) \|$", page, re.M))
    for detector in REGISTRY:
        assert set(re.findall(r"`([a-z_.]+)`", rows.get(detector.name, ""))) == detector.event_types, detector.name


def test_through_a_real_exporter_on_redis(redis_url: str, redis_prefix: str, now: int) -> None:
    """Both findings as /api/anomalies shows them, from `billingwatch serve` on a real redis-server."""
    events = [
        paid_invoice("invoice.paid", now - 300, customer="cus_e2e", currency="usd"),
        paid_invoice("invoice.payment_succeeded", now - 200, customer="cus_e2e", currency="gbp", invoice_id="in_e2e"),
        se.event("invoice.created", se.invoice(subscription="sub_e2e", created=now - 100), created=now - 100),
        se.event("invoice.created", se.invoice(subscription="sub_e2e", created=now - 40), created=now - 40),
    ]
    with running_exporter(REDIS_URL=redis_url, BILLINGWATCH_REDIS_PREFIX=redis_prefix) as exporter:
        for evt in events:
            payload = se.body(evt)
            response = httpx.post(exporter.url + "/webhooks/stripe", content=payload, timeout=10,
                                  headers=se.signed_headers(payload, SECRET))
            assert response.status_code == 200, response.text
        records = httpx.get(exporter.url + "/api/anomalies", timeout=10).json()["anomalies"]
    found = {r["detector"]: r for r in records}
    assert set(found) == {"currency_mismatch", "double_invoice"}
    assert (found["currency_mismatch"]["invoice"], found["currency_mismatch"]["currency"]) == ("in_e2e", "gbp")
    assert found["double_invoice"]["details"] == {"gap_seconds": 60}
