"""The store contract: the same behaviour from the Redis store and the in-process store."""

import time

import pytest

from billingwatch.fixtures import stripe_events as se
from billingwatch.metrics import families as fam
from billingwatch.metrics import fields
from billingwatch.recording.plan import Check, Plan
from billingwatch.store import MemoryStore, Store, Unrecordable, memory_store, redis_store
from tests.metrics import gauge_value, value
from tests.recording import figures, record

pytestmark = pytest.mark.anyio
DAY = 86400


def sub_event(event_type: str, created: int, **kw: object) -> dict[str, object]:
    return se.event(event_type, se.subscription(**kw), created=created)  # type: ignore[arg-type]


async def test_dedup_makes_a_redelivery_change_nothing(store: Store) -> None:
    evt = se.event("charge.refunded", se.charge())
    first = await record(store, evt)
    before = await store.snapshot(time.time(), 0)
    second = await record(store, evt)
    assert (first.duplicate, second.duplicate) == (False, True)
    assert await store.snapshot(time.time(), 0) == before
    assert await store.recorded([(evt["id"], "false"), ("evt_never", "false"), (evt["id"], "true")]) == [  # type: ignore[list-item]
        True, False, False]


async def test_subscription_gauges_follow_the_newest_snapshot(store: Store, now: int) -> None:
    async def held(status: str) -> float:
        return gauge_value(await figures(store), "billingwatch_subscriptions", status=status, livemode="false")

    async def mrr() -> float:
        return gauge_value(await figures(store), "billingwatch_mrr_amount", currency="usd", livemode="false")

    async def ended() -> float:
        return value(await figures(store), "billingwatch_subscriptions_ended_total", livemode="false")

    await record(store, sub_event("customer.subscription.created", now - 300, status="trialing"))
    assert await held("trialing") == 1
    await record(store, sub_event("customer.subscription.updated", now - 200, status="active", unit_amount=1200,
                                  quantity=2))
    assert await held("trialing") == 0
    assert await held("active") == 1
    assert await mrr() == pytest.approx(24.00)
    # An older snapshot delivered late changes nothing.
    await record(store, sub_event("customer.subscription.updated", now - 250, status="past_due"))
    assert await held("active") == 1 and await held("past_due") == 0
    await record(store, sub_event("customer.subscription.deleted", now - 100, status="canceled"))
    assert await held("active") == 0
    assert await mrr() == 0
    assert await ended() == 1
    # A stale update after the deletion does not resurrect it.
    await record(store, sub_event("customer.subscription.updated", now - 150, status="active"))
    assert await held("active") == 0 and await ended() == 1


async def test_mrr_normalises_intervals_per_currency(store: Store, now: int) -> None:
    await record(store, sub_event("customer.subscription.created", now, subscription_id="sub_y", unit_amount=12000,
                                  interval="year", currency="usd"))
    await record(store, sub_event("customer.subscription.created", now, subscription_id="sub_q", unit_amount=3000,
                                  interval="month", interval_count=3, currency="usd"))
    await record(store, sub_event("customer.subscription.created", now, subscription_id="sub_j", unit_amount=500,
                                  currency="jpy", old_shape=True))
    metrics = await figures(store)
    assert value(metrics, "billingwatch_mrr_amount", currency="usd", livemode="false") == pytest.approx(20.00)
    assert value(metrics, "billingwatch_mrr_amount", currency="jpy", livemode="false") == pytest.approx(500)  # no minor


async def test_lapsed_subscription_counts_after_grace_and_clears_when_paid(store: Store, now: int) -> None:
    period_end = now - 3 * DAY
    await record(store, sub_event("customer.subscription.updated", now - 40 * DAY, subscription_id="sub_lapse",
                                  period_end=period_end))
    assert (await store.snapshot(now, 2 * DAY)).lapsed["false"] == 1
    assert (await store.snapshot(now, 4 * DAY)).lapsed["false"] == 0  # still within a longer grace
    paid = se.invoice(subscription="sub_lapse", invoice_id="in_renewal")
    await record(store, se.event("invoice.paid", paid, created=period_end + 3600))
    assert (await store.snapshot(now, 2 * DAY)).lapsed["false"] == 0


async def test_renewal_moves_the_watch_to_the_next_period(store: Store, now: int) -> None:
    old_end = now - 5 * DAY
    await record(store, sub_event("customer.subscription.updated", now - 35 * DAY, subscription_id="sub_r",
                                  period_end=old_end))
    paid = se.invoice(subscription="sub_r", old_shape=True)
    await record(store, se.event("invoice.paid", paid, created=old_end + 60))
    new_end = old_end + 30 * DAY
    await record(store, sub_event("customer.subscription.updated", old_end + 61, subscription_id="sub_r",
                                  period_end=new_end))
    assert (await store.snapshot(now, DAY)).lapsed["false"] == 0
    assert (await store.snapshot(new_end + 2 * DAY, DAY)).lapsed["false"] == 1


async def test_a_forgotten_subscription_stops_counting_as_lapsed(store: Store, now: int) -> None:
    await record(store, sub_event("customer.subscription.updated", now - 40 * DAY, subscription_id="sub_gone",
                                  period_end=now - 10 * DAY))
    assert (await store.snapshot(now, DAY, lapse_horizon=20 * DAY)).lapsed["false"] == 1
    assert (await store.snapshot(now, DAY, lapse_horizon=5 * DAY)).lapsed["false"] == 0


async def test_only_active_subscriptions_can_lapse(store: Store, now: int) -> None:
    await record(store, sub_event("customer.subscription.updated", now - 40 * DAY, subscription_id="sub_pd",
                                  status="past_due", period_end=now - 10 * DAY))
    assert (await store.snapshot(now, DAY)).lapsed["false"] == 0


async def test_refunds_count_once_whichever_events_report_them(store: Store) -> None:
    refund = se.refund(refund_id="re_1", amount=700, currency="gbp")
    await record(store, se.event("refund.created", refund))
    charge = se.charge(currency="gbp")
    charge["refunds"] = {"object": "list", "data": [refund], "has_more": False}
    await record(store, se.event("charge.refunded", charge))
    await record(store, se.event("refund.updated", refund))
    metrics = await figures(store)
    assert value(metrics, "billingwatch_refunds_total", currency="gbp", livemode="false") == 1
    assert value(metrics, "billingwatch_refund_amount_total", currency="gbp", livemode="false") == pytest.approx(7.00)


async def test_invoice_paid_counts_once_and_failures_by_attempt(store: Store) -> None:
    inv = se.invoice(total=4200, invoice_id="in_p")
    await record(store, se.event("invoice.paid", inv))
    await record(store, se.event("invoice.payment_succeeded", inv))
    metrics = await figures(store)
    assert value(metrics, "billingwatch_invoices_paid_total", currency="usd", livemode="false") == 1
    assert value(metrics, "billingwatch_invoice_paid_amount_total", currency="usd",
                 livemode="false") == pytest.approx(42.00)
    for attempt in (1, 2, 5):
        failed = se.invoice(status="open", attempt_count=attempt)
        await record(store, se.event("invoice.payment_failed", failed))
    metrics = await figures(store)
    assert [value(metrics, "billingwatch_invoice_payment_failures_total", attempt=a, livemode="false")
            for a in ("1", "2", "3", "4+")] == [1, 1, 0, 1]


async def test_disputes_and_fraud_warnings_with_bounded_labels(store: Store) -> None:
    await record(store, se.event("charge.dispute.created", se.dispute(reason="fraudulent", amount=900)))
    await record(store, se.event("charge.dispute.created", se.dispute(reason="some_new_reason")))
    await record(store, se.event("radar.early_fraud_warning.created", se.early_fraud_warning()))
    metrics = await figures(store)
    assert value(metrics, "billingwatch_disputes_total", reason="fraudulent", livemode="false") == 1
    assert value(metrics, "billingwatch_disputes_total", reason="other", livemode="false") == 1
    assert value(metrics, "billingwatch_dispute_amount_total", currency="usd", livemode="false") == pytest.approx(29.00)
    assert value(metrics, "billingwatch_early_fraud_warnings_total", fraud_type="made_with_stolen_card",
                 livemode="false") == 1


async def test_lag_histogram_and_last_event_times(store: Store, now: int) -> None:
    created = now - 700
    await record(store, se.event("charge.succeeded", se.charge(), created=created), received_at=now)
    metrics = await figures(store, now)
    lag = "billingwatch_webhook_delivery_lag_seconds"
    assert value(metrics, lag + "_bucket", le="600.0", livemode="false") == 0
    assert value(metrics, lag + "_bucket", le="1800.0", livemode="false") == 1
    assert value(metrics, lag + "_count", livemode="false") == 1
    assert value(metrics, lag + "_sum", livemode="false") == pytest.approx(700)
    assert value(metrics, "billingwatch_last_event_received_timestamp_seconds", livemode="false") == now
    assert value(metrics, "billingwatch_last_event_created_timestamp_seconds", livemode="false") == created
    # An older event does not move the last-created time back.
    await record(store, se.event("charge.succeeded", se.charge(amount=1), created=created - 50), received_at=now)
    assert value(await figures(store, now), "billingwatch_last_event_created_timestamp_seconds",
                 livemode="false") == created


async def test_window_sets_are_capped_oldest_first(store: Store) -> None:
    def window(event_id: str, member: str, at: int, width: int = 0, hit_counter: str = "") -> Plan:
        counters = {hit_counter: 1} if hit_counter else {}
        check = Check(op="window", key="capped", member=member, at=at, window=width, ttl=60, cap=3, counters=counters)
        return Plan(event_id=event_id, dedup_ttl=60, checks=[check])

    for i in range(10):
        await store.apply(window(f"evt_cap{i}", f"m{i}", 1000 + i))
    # m0..m6 were dropped: a probe near them finds nothing; one near m8 does.
    await store.apply(window("evt_old", "probe_old", 1001, width=2, hit_counter="x|old"))
    await store.apply(window("evt_new", "probe_new", 1008, width=0, hit_counter="x|new"))
    counters = (await store.snapshot(time.time(), 0)).counters
    assert counters.get("x|old", 0) == 0
    assert counters.get("x|new") == 1


async def test_sum_hits_when_a_span_total_crosses_its_threshold_once(store: Store) -> None:
    def add(event_id: str, member: str, amount: int, at: int, threshold: int = 100) -> Plan:
        check = Check(op="sum", key="summed", member=member, amount=amount, at=at, window=50, threshold=threshold,
                      ttl=60, counters={"x|hit": 1})
        return Plan(event_id=event_id, dedup_ttl=60, checks=[check])

    async def hits() -> int:
        return (await store.snapshot(time.time(), 0)).counters.get("x|hit", 0)

    await store.apply(add("e1", "a", 60, 1000))
    await store.apply(add("e2", "b", 30, 1100))  # 100 s later: its own span holds 30 only
    assert await hits() == 0
    await store.apply(add("e3", "a", 60, 1000))  # the same member again (another event of it): nothing
    assert await hits() == 0
    await store.apply(add("e4", "c", 40, 1040))  # a (1000) + c: 100, crossing
    assert await hits() == 1
    await store.apply(add("e5", "d", 10, 1045))  # still above: the same episode
    assert await hits() == 1
    await store.apply(add("e6", "z", 99, 500, threshold=99))  # alone at the threshold
    assert await hits() == 2


@pytest.mark.parametrize("field", [{"amount": 10**12 + 1}, {"threshold": 10**15 + 1}, {"amount": -1}])
async def test_sum_check_out_of_range_is_refused_before_any_write(store: Store, field: dict[str, int]) -> None:
    from billingwatch.store import Unrecordable

    check = Check(op="sum", key="bad", member="m", at=1, window=5, ttl=60, counters={"x|bad": 1},
                  **{"amount": 1, "threshold": 1, **field})
    with pytest.raises(Unrecordable, match="sum check"):
        await store.apply(Plan(event_id="evt_bad_sum", dedup_ttl=60, counters={"x|before": 1}, checks=[check]))
    assert (await store.snapshot(time.time(), 0)).counters.get("x|before", 0) == 0
    assert not (await store.recorded([("evt_bad_sum", "false")]))[0]


async def test_increment_adds_to_store_counters(store: Store) -> None:
    await store.increment({fields.field(fam.MISSED_EVENTS, "true"): 3})
    assert value(await figures(store), "billingwatch_missed_events_total", livemode="true") == 3


async def test_anomaly_log_keeps_the_newest() -> None:
    store = MemoryStore(anomaly_log_size=2)
    for total in (-1, -2, -3):
        await record(store, se.event("invoice.finalized", se.invoice(total=total, billing_reason="manual")))
    assert [a["amount"] for a in await store.anomalies(10)] == [-3, -2]


async def test_memory_store_forgets_event_ids_after_their_ttl() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    plan = Plan(event_id="evt_ttl", dedup_ttl=60, counters={"ev|x.y|false": 1})
    assert not (await store.apply(plan)).duplicate
    now[0] += 59
    assert (await store.apply(plan)).duplicate
    now[0] += 2
    assert await store.recorded([("evt_ttl", "false")]) == [False]


async def test_a_verdict_replaces_the_earlier_and_counts_each_change_once(store: Store,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fp = fields.feedback_field("duplicate_charge", "false_positive")
    ok = fields.feedback_field("duplicate_charge", "expected")
    assert await store.set_verdict("duplicate_charge-0000000000000001", "false_positive", 100, fp) is None
    assert await store.set_verdict("duplicate_charge-0000000000000001", "false_positive", 200, fp) == "false_positive"
    assert await store.set_verdict("duplicate_charge-0000000000000001", "expected", 300, ok) == "false_positive"
    counters = (await store.snapshot(0, 0)).counters
    assert (counters.get(fp), counters.get(ok)) == (1, 1)  # the repeat wrote nothing
    assert await store.verdicts(["duplicate_charge-0000000000000001", "duplicate_charge-0000000000000002"]) == {
        "duplicate_charge-0000000000000001": {"verdict": "expected", "at": 300}}
    assert await store.verdicts([]) == {}
    # Full: a new anomaly's verdict is refused with nothing written; a known one still changes.
    monkeypatch.setattr(memory_store, "MAX_VERDICTS", 2)
    monkeypatch.setattr(redis_store, "MAX_VERDICTS", 2)
    await store.set_verdict("duplicate_charge-0000000000000002", "expected", 400, ok)
    with pytest.raises(Unrecordable):
        await store.set_verdict("duplicate_charge-0000000000000003", "expected", 500, ok)
    assert await store.verdicts(["duplicate_charge-0000000000000003"]) == {}
    assert await store.set_verdict("duplicate_charge-0000000000000001", "false_positive", 600, fp) == "expected"
    counters = (await store.snapshot(0, 0)).counters
    assert (counters.get(fp), counters.get(ok)) == (2, 2)
