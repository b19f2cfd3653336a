"""Regression tests for issue 11, items 7-14: what one (validly signed) event may do to the state.

Each test names the item it guards. They run against both stores: over HTTP through the real app,
or straight through the store contract.
"""

import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from billingwatch.fixtures import stripe_events as se
from billingwatch.metrics.labels import RESULTS
from billingwatch.money import CURRENCIES
from billingwatch.recording.events import MAX_AMOUNT, MAX_LIST, payment_intent_of
from billingwatch.recording.plan import Anomaly, Check, Plan, SubscriptionState
from billingwatch.store import MemoryStore, RedisStore, Store, Unrecordable
from billingwatch.store.contract import COUNTER_LIMIT
from tests.metrics import scrape, store_figures, value
from tests.recording import anomaly_count, counter, figures, record
from tests.test_webhook_http import post

Client = Callable[..., TestClient]
URL = "/webhooks/stripe"


@pytest.fixture(params=["memory", "redis"])
def pair(request: pytest.FixtureRequest, make_client: Client) -> tuple[TestClient, Store]:
    """The real app and the store behind it (tests set store-held totals directly)."""
    store: Store
    if request.param == "memory":
        store = MemoryStore()
    else:
        store = RedisStore(request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix"))
    return make_client(store=store, max_body_bytes=4 * 1024 * 1024), store


def unquarantined(figures: dict[Any, float]) -> dict[Any, float]:
    """The store-held figures but the quarantine's own."""
    return {k: v for k, v in figures.items() if "quarantine" not in k[0]}


def rejected(client: TestClient, evt: dict[str, Any], before: dict[Any, float]) -> str:
    """Post a signed event this version refuses; its reason. A signed event envelope is Stripe's
    word: it is kept in the quarantine (200; tests/test_quarantine.py), and nothing else moves."""
    response = post(client, evt)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["quarantined"] is True, answer
    reason: str = answer["reason"]
    assert reason and "\n" not in reason
    assert unquarantined(store_figures(scrape(client))) == unquarantined(before)
    return reason


# ------------------------------------------------------------------ 7: live and test never share state


@pytest.mark.anyio
async def test_7_a_test_mode_update_cannot_touch_a_live_subscription(store: Store, now: int) -> None:
    live = se.subscription(subscription_id="sub_shared", unit_amount=5000)
    await record(store, se.event("customer.subscription.created", live, created=now - 300, livemode=True))
    forged = se.subscription(subscription_id="sub_shared", status="canceled")
    await record(store, se.event("customer.subscription.updated", forged, created=now - 100))
    metrics = await figures(store)
    assert value(metrics, "billingwatch_subscriptions", status="active", livemode="true") == 1
    assert value(metrics, "billingwatch_mrr_amount", currency="usd", livemode="true") == pytest.approx(50.00)
    # A genuine live update older than the test-mode one still applies.
    later = se.subscription(subscription_id="sub_shared", unit_amount=7000)
    await record(store, se.event("customer.subscription.updated", later, created=now - 200, livemode=True))
    metrics = await figures(store)
    assert value(metrics, "billingwatch_mrr_amount", currency="usd", livemode="true") == pytest.approx(70.00)


@pytest.mark.anyio
async def test_7_event_ids_refunds_and_detector_memory_are_per_livemode(store: Store) -> None:
    test_evt = se.event("refund.created", se.refund(refund_id="re_shared", amount=300), event_id="evt_shared")
    live_evt = se.event("refund.created", se.refund(refund_id="re_shared", amount=300), event_id="evt_shared",
                        livemode=True)
    assert not (await record(store, test_evt)).duplicate
    assert not (await record(store, live_evt)).duplicate  # the test-mode id does not claim the live one
    metrics = await figures(store)
    assert [value(metrics, "billingwatch_refund_amount_total", currency="usd", livemode=mode)
            for mode in ("true", "false")] == [pytest.approx(3.00), pytest.approx(3.00)]
    assert await store.recorded([("evt_shared", "true"), ("evt_shared", "false")]) == [True, True]
    for livemode in (False, True):
        invoice = se.invoice(total=-100, invoice_id="in_shared", billing_reason="manual")
        await record(store, se.event("invoice.finalized", invoice, livemode=livemode))
    assert await anomaly_count(store, "negative_invoice", "false") == 1
    assert await anomaly_count(store, "negative_invoice", "true") == 1


@pytest.mark.anyio
async def test_7_one_spelling_of_livemode_in_redis_keys(redis_url: str, redis_prefix: str) -> None:
    store = RedisStore(redis_url, prefix=redis_prefix)
    for livemode in (False, True):
        for charge_id in ("ch_k1", "ch_k2"):
            charge = se.charge(charge_id=charge_id + str(livemode), livemode=livemode)
            await record(store, se.event("charge.succeeded", charge, livemode=livemode))
    keys = [k.decode() for k in await store._redis.keys(store.key("*"))]
    await store.close()
    per_event = [k for k in keys if k.split(":")[1] in ("e", "c")]  # dedup and detector memory
    assert {k.split(":")[1] for k in per_event} == {"e", "c"}
    assert all((":true:" in k) != (":false:" in k) for k in per_event), per_event
    assert not [k for k in keys if ":live:" in k or ":test:" in k]


def test_7_13_created_after_receipt_plus_tolerance_is_rejected(pair: tuple[TestClient, Store]) -> None:
    client, _ = pair
    now = int(time.time())
    assert post(client, se.event("charge.succeeded", se.charge(), created=now - 10)).status_code == 200
    before = store_figures(scrape(client))
    for created in (now + 400, now + 10**9, 10**15):
        reason = rejected(client, se.event("charge.succeeded", se.charge(), created=created), before)
        assert "event.created is in the future" in reason
    assert value(scrape(client), "billingwatch_last_event_created_timestamp_seconds", livemode="false") == now - 10
    # Within the signature tolerance (clock skew) an event is Stripe's.
    assert post(client, se.event("charge.succeeded", se.charge(), created=now + 200)).status_code == 200
    assert value(scrape(client), "billingwatch_last_event_created_timestamp_seconds", livemode="false") == now + 200


# ------------------------------------------------------------------ 8: refused before the first write


def refund_list_charge(count: int, amount: int) -> dict[str, Any]:
    charge = se.charge()
    charge["refunds"] = {
        "object": "list", "has_more": False,
        "data": [{"id": f"re_many{i}", "object": "refund", "amount": amount, "currency": "usd",
                  "status": "succeeded", "charge": charge["id"]} for i in range(count)],
    }
    return charge


def test_8_the_9300_refund_event_is_rejected_whole_and_its_retry_too(pair: tuple[TestClient, Store]) -> None:
    client, _ = pair
    evt = se.event("charge.refunded", refund_list_charge(9300, 10**15))
    before = store_figures(scrape(client))
    assert f"more than {MAX_LIST}" in rejected(client, evt, before)
    # Stripe's retry is a duplicate of the quarantined event: nothing moves.
    assert post(client, evt).json()["duplicate"] is True
    assert unquarantined(store_figures(scrape(client))) == unquarantined(before)
    # Within the list bound and with real amounts the same event shape is recorded.
    ok = se.event("charge.refunded", refund_list_charge(MAX_LIST, MAX_AMOUNT))
    assert post(client, ok).status_code == 200
    assert value(scrape(client), "billingwatch_refunds_total", currency="usd", livemode="false") == MAX_LIST


def test_8_a_counter_near_the_64_bit_limit_is_refused_whole_and_kept_in_the_quarantine(
    pair: tuple[TestClient, Store]
) -> None:
    client, store = pair
    field = "rfa|usd|false"
    client.portal.call(store.increment, {field: COUNTER_LIMIT - 100})
    evt = se.event("refund.created", se.refund(refund_id="re_overflow", amount=500))
    before = store_figures(scrape(client))
    assert rejected(client, evt, before) == ("event cannot be recorded: total rfa|usd|false would leave the range "
                                             "a 64-bit counter can hold")
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="quarantined") == 1
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="unrecordable") == 0
    assert post(client, evt).json()["duplicate"] is True  # Stripe's retry: nothing moves
    assert unquarantined(store_figures(scrape(client))) == unquarantined(before)
    # Nothing was left behind: once room is made, requeue counts the refund, once.
    client.portal.call(store.increment, {field: -(COUNTER_LIMIT - 100)})
    assert client.post("/api/quarantine/requeue", json={}).json() == {
        "recorded": 1, "duplicates": 0, "anomalies": 0, "kept": []}
    assert value(scrape(client), "billingwatch_refunds_total", currency="usd", livemode="false") == 1
    assert value(scrape(client), "billingwatch_refund_amount_total", currency="usd", livemode="false") == 5
    assert post(client, evt).json()["duplicate"] is True


def once_plan(event_id: str, count: int, amount: int, **kw: Any) -> Plan:
    checks = [Check(op="once", key=f"big:{event_id}:{i}", ttl=60, counters={"x|big": amount}) for i in range(count)]
    return Plan(event_id=event_id, dedup_ttl=60, counters={"x|events": 1}, checks=checks, **kw)


@pytest.mark.anyio
async def test_8_the_store_checks_every_total_before_its_first_write(store: Store) -> None:
    before = await store.snapshot(time.time(), 0)
    # 999 once checks of 10^16: the first 900 fit, the rest would overflow half-way.
    with pytest.raises(Unrecordable, match=r"x\|big"):
        await store.apply(once_plan("evt_half", 999, 10**16))
    assert await store.snapshot(time.time(), 0) == before
    assert await store.recorded([("evt_half", "false")]) == [False]
    # No check key was claimed: the same keys still hit for a smaller plan.
    assert not (await store.apply(once_plan("evt_half", 999, 1))).duplicate
    assert await counter(store, "x|big") == 999


@pytest.mark.anyio
async def test_8_the_limit_is_exact_on_both_stores(store: Store) -> None:
    """Lua numbers are doubles (exact to 2^53): the script must still compare 64-bit totals exactly."""
    await store.increment({"x|top": COUNTER_LIMIT - 500, "x|bottom": -COUNTER_LIMIT + 500})

    def plan(event_id: str, field: str, amount: int) -> Plan:
        return Plan(event_id=event_id, dedup_ttl=60, counters={field: amount})

    with pytest.raises(Unrecordable):
        await store.apply(plan("evt_top_over", "x|top", 501))
    with pytest.raises(Unrecordable):
        await store.apply(plan("evt_bottom_over", "x|bottom", -501))
    await store.apply(plan("evt_top", "x|top", 500))
    await store.apply(plan("evt_bottom", "x|bottom", -500))
    assert (await counter(store, "x|top"), await counter(store, "x|bottom")) == (COUNTER_LIMIT, -COUNTER_LIMIT)


@pytest.mark.anyio
async def test_8_decrements_gauges_and_retentions_are_checked_too(store: Store, now: int) -> None:
    await store.increment({"x|low": -COUNTER_LIMIT + 5})
    low = Plan(event_id="evt_low", dedup_ttl=60,
               checks=[Check(op="once", key="low", ttl=60, counters={"x|low": -10})])
    with pytest.raises(Unrecordable):
        await store.apply(low)
    sub = SubscriptionState(id="sub_big", livemode="false", at=now, status="active", mrr_currency="usd",
                            mrr_milli=10**15, period_end=0, ttl=60, customer="cus_big")
    # A customer's MRR is computed exactly (Lua doubles) up to MAX_CUSTOMER_MRR: 9 subscriptions fill it.
    for n in range(9):
        full = SubscriptionState(**{**sub.__dict__, "id": f"sub_full{n}"})
        await store.apply(Plan(event_id=f"evt_sub_full{n}", dedup_ttl=60, subscription=full))
    before = await store.snapshot(time.time(), 0)
    with pytest.raises(Unrecordable, match="customer's mrr"):
        await store.apply(Plan(event_id="evt_sub_over", dedup_ttl=60, subscription=sub))
    too_big = SubscriptionState(**{**sub.__dict__, "id": "sub_too_big", "mrr_milli": 10**15 + 1})
    with pytest.raises(Unrecordable, match="subscription's mrr"):
        await store.apply(Plan(event_id="evt_sub_too_big", dedup_ttl=60, subscription=too_big))
    # A retention the store cannot set would fail at the script's last EXPIRE: refused up front.
    long_lived = SubscriptionState(**{**sub.__dict__, "mrr_milli": 0, "ttl": 10**17})
    with pytest.raises(Unrecordable, match="TTL"):
        await store.apply(Plan(event_id="evt_ttl_over", dedup_ttl=60, counters={"x|n": 1}, subscription=long_lived))
    assert await store.snapshot(time.time(), 0) == before
    assert await store.recorded([("evt_sub_over", "false"), ("evt_ttl_over", "false")]) == [False, False]


@pytest.mark.anyio
async def test_8_a_recorded_event_stays_a_duplicate_when_totals_are_full(store: Store) -> None:
    evt = se.event("refund.created", se.refund(amount=500))
    await record(store, evt)
    await store.increment({"rfa|usd|false": COUNTER_LIMIT - 600})
    assert (await record(store, evt)).duplicate


# ------------------------------------------------------------------ 9: failed and canceled refunds


async def refund_figures(store: Store) -> tuple[float, float, float, float]:
    """usd refunds counted, their amount (minor units), those taken back and their amount."""
    metrics = await figures(store)
    names = ("refunds_total", "refund_amount_total", "refunds_reversed_total", "refund_reversed_amount_total")
    counts, amount, reversed_, reversed_amount = (
        value(metrics, f"billingwatch_{name}", currency="usd", livemode="false") for name in names)
    return counts, round(amount * 100), reversed_, round(reversed_amount * 100)


async def standing(store: Store) -> tuple[float, float]:
    """Refunds (count, amount in minor units) that stand: counted minus taken back. Each counter only grows."""
    counted, amount, reversed_, reversed_amount = await refund_figures(store)
    assert min(counted, amount, reversed_, reversed_amount) >= 0
    return counted - reversed_, amount - reversed_amount


@pytest.mark.anyio
async def test_9_failed_and_canceled_refunds_on_a_charge_are_never_counted(store: Store) -> None:
    charge = se.charge()
    charge["refunds"] = {"object": "list", "has_more": False, "data": [
        se.refund(amount=700, status="failed"), se.refund(amount=300, status="canceled"),
        se.refund(amount=500, status="succeeded")]}
    await record(store, se.event("charge.refunded", charge))
    assert await standing(store) == (1, 500)


@pytest.mark.anyio
async def test_9_a_pending_refund_that_fails_is_taken_back_exactly_once(store: Store) -> None:
    await record(store, se.event("refund.created", se.refund(refund_id="re_p", amount=700, status="pending")))
    assert await standing(store) == (1, 700)
    failed = se.event("refund.updated", se.refund(refund_id="re_p", amount=700, status="failed"))
    await record(store, failed)
    await record(store, failed)  # redelivery
    await record(store, se.event("refund.failed", se.refund(refund_id="re_p", amount=700, status="failed")))
    await record(store, se.event("charge.refund.updated", se.refund(refund_id="re_p", amount=700,
                                                                     status="failed")))
    await record(store, se.event("refund.updated", se.refund(refund_id="re_p", amount=700, status="pending")))
    assert await standing(store) == (0, 0)
    # Taken back through its own counter: the counted one never goes down (rate() would see a reset).
    counted, _, reversed_, _ = await refund_figures(store)
    assert (counted, reversed_) == (1, 1)
    # Another refund is unaffected.
    await record(store, se.event("refund.created", se.refund(refund_id="re_q", amount=200)))
    assert await standing(store) == (1, 200)


@pytest.mark.anyio
async def test_9_a_cancellation_arriving_first_stops_the_late_creation_from_counting(store: Store) -> None:
    await record(store, se.event("refund.updated", se.refund(refund_id="re_o", amount=300, status="canceled")))
    assert await standing(store) == (0, 0)
    await record(store, se.event("refund.created", se.refund(refund_id="re_o", amount=300, status="pending")))
    charge = se.charge()
    charge["refunds"] = {"object": "list", "has_more": False, "data": [se.refund(refund_id="re_o", amount=300)]}
    await record(store, se.event("charge.refunded", charge))
    assert await standing(store) == (0, 0)


# ------------------------------------------------------------------ 10, 11: labels and signs


@pytest.mark.parametrize("currency", ["usd\n", "zzz", "USD", "us", "\u0455sd"])
def test_10_currency_labels_come_from_stripes_iso_codes(pair: tuple[TestClient, Store], currency: str) -> None:
    client, _ = pair
    before = store_figures(scrape(client))
    assert "currency" in rejected(client, se.event("charge.succeeded", se.charge(currency=currency)), before)
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="quarantined") == 1


def test_10_every_currency_stripe_supports_is_accepted(pair: tuple[TestClient, Store]) -> None:
    client, _ = pair
    assert {"usd", "eur", "jpy", "kwd", "bhd", "isk", "huf"} <= CURRENCIES
    for currency in ("eur", "jpy", "kwd"):
        assert post(client, se.event("charge.succeeded", se.charge(currency=currency))).status_code == 200


def negative(kind: str) -> dict[str, Any]:
    if kind == "charge":
        return se.event("charge.succeeded", se.charge(amount=-(10**15)))
    if kind == "refund":
        return se.event("refund.created", se.refund(amount=-500))
    if kind == "dispute":
        return se.event("charge.dispute.created", se.dispute(amount=-1))
    if kind == "payment_intent":
        intent = se.payment_intent(charge_id="ch_neg")
        intent["amount_received"] = -2000
        return se.event("payment_intent.succeeded", intent)
    if kind == "invoice":
        invoice = se.invoice()
        invoice["amount_paid"] = -2000
        return se.event("invoice.paid", invoice)
    return se.event("customer.subscription.updated", se.subscription(unit_amount=-2000))


@pytest.mark.parametrize("kind", ["charge", "refund", "dispute", "payment_intent", "invoice", "subscription"])
def test_11_negative_amounts_are_rejected(pair: tuple[TestClient, Store], kind: str) -> None:
    client, _ = pair
    before = store_figures(scrape(client))
    assert "negative" in rejected(client, negative(kind), before)


def test_11_a_negative_invoice_total_is_still_recorded_and_detected(pair: tuple[TestClient, Store]) -> None:
    client, _ = pair
    response = post(client, se.event("invoice.finalized", se.invoice(total=-500, billing_reason="manual")))
    assert response.status_code == 200 and response.json()["anomalies"] == 1


# ------------------------------------------------------------------ 12: the latest charge of a PaymentIntent


def old_shape_intent(charge_ok: str, charge_declined: str) -> dict[str, Any]:
    intent = se.payment_intent(charge_id=charge_ok)
    now = int(time.time())
    intent["latest_charge"] = None
    intent["charges"] = {"object": "list", "has_more": False, "data": [  # Stripe lists newest first
        {**se.charge(charge_id=charge_ok), "created": now - 10},
        {**se.charge(charge_id=charge_declined, status="failed"), "created": now - 60},
    ]}
    return intent


def test_12_latest_charge_is_the_newest_listed_not_the_last() -> None:
    assert payment_intent_of(old_shape_intent("ch_ok", "ch_declined")).latest_charge == "ch_ok"


@pytest.mark.anyio
async def test_12_a_retried_payment_is_no_duplicate_charge(store: Store, now: int) -> None:
    await record(store, se.event("charge.succeeded", se.charge(charge_id="ch_paid"), created=now - 10))
    intent = old_shape_intent("ch_paid", "ch_first_try")
    await record(store, se.event("payment_intent.succeeded", intent, created=now - 9))
    assert await anomaly_count(store, "duplicate_charge") == 0


# ------------------------------------------------------------------ 14: exact amounts in the anomaly log


def test_14_the_largest_amount_round_trips_exactly_through_the_anomaly_log(pair: tuple[TestClient, Store]) -> None:
    client, _ = pair
    now = int(time.time())
    for charge_id, created in (("ch_big1", now - 60), ("ch_big2", now)):
        evt = se.event("charge.succeeded", se.charge(charge_id=charge_id, amount=MAX_AMOUNT), created=created)
        assert post(client, evt).status_code == 200
    invoice = se.invoice(total=-MAX_AMOUNT + 1, billing_reason="manual")
    assert post(client, se.event("invoice.finalized", invoice, created=now)).status_code == 200
    response = client.get("/api/anomalies")
    records = response.json()["anomalies"]
    amounts = {r["detector"]: r["amount"] for r in records}
    assert amounts == {"duplicate_charge": MAX_AMOUNT, "negative_invoice": -MAX_AMOUNT + 1}
    assert all(type(r["amount"]) is int and type(r["event_created"]) is int for r in records)
    assert f'"amount":{MAX_AMOUNT}' in response.text.replace(" ", "")


@pytest.mark.anyio
async def test_14_the_store_keeps_any_integer_of_an_anomaly_record_exactly(store: Store, now: int) -> None:
    """cjson writes numbers with 14 significant digits: 123456789012345 came back 123456789012340.0."""
    record = Anomaly(detector="negative_invoice", severity="medium", livemode=False, event_id="evt_exact",
                     event_type="invoice.finalized", event_created=now, summary="exact", amount=123456789012345)
    check = Check(op="once", key="exact", ttl=60, anomaly=record)
    (fired,) = (await store.apply(Plan(event_id="evt_exact", dedup_ttl=60, checks=[check]))).anomalies
    (logged,) = await store.anomalies(10)
    for shown in (fired, logged):
        assert (shown["amount"], shown["event_created"]) == (123456789012345, now)
        assert type(shown["amount"]) is int


def test_8_unrecordable_is_a_webhook_result() -> None:
    assert "unrecordable" in RESULTS
