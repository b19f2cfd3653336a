"""The money signals (issue 28) on both stores: payouts, dispute outcomes and funds, PaymentIntent
failures, invoices needing action, Radar reviews open now, bad debt. Each at 0 from the start,
counted once per object, history moving state but no live counter."""

import time

import pytest

from billingwatch.detectors import build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.recorder import Recorder
from billingwatch.store import Store
from tests.metrics import value
from tests.recording import DEDUP_TTL, SUBSCRIPTION_TTL, figures, record

pytestmark = pytest.mark.anyio
HOUR = 3600


async def test_every_signal_exists_at_zero_before_its_first_event(store: Store) -> None:
    await record(store, se.event("charge.succeeded", se.charge(currency="eur")))  # a currency seen
    metrics = await figures(store)
    for name, labels in [
        ("billingwatch_payouts_total", {"status": "failed", "currency": "eur"}),
        ("billingwatch_payout_amount_total", {"status": "paid", "currency": "eur"}),
        ("billingwatch_payout_failures_total", {"reason": "account_closed"}),
        ("billingwatch_payout_failures_total", {"reason": "other"}),
        ("billingwatch_disputes_closed_total", {"outcome": "lost"}),
        ("billingwatch_dispute_lost_amount_total", {"currency": "eur"}),
        ("billingwatch_dispute_fund_movements_total", {"movement": "withdrawn"}),
        ("billingwatch_dispute_fund_amount_total", {"movement": "reinstated", "currency": "eur"}),
        ("billingwatch_payment_intent_failures_total", {"code": "authentication_required"}),
        ("billingwatch_invoices_action_required_total", {}),
        ("billingwatch_reviews_opened_total", {"reason": "rule"}),
        ("billingwatch_reviews_closed_total", {"reason": "approved"}),
        ("billingwatch_reviews_open", {}),
        ("billingwatch_review_oldest_open_timestamp_seconds", {}),
        ("billingwatch_invoices_uncollectible_total", {"currency": "eur"}),
        ("billingwatch_invoice_uncollectible_amount_total", {"currency": "eur"}),
    ]:
        # A currency exists in the mode it was seen in; the rest in both from the start.
        for mode in ("false",) if "currency" in labels else ("true", "false"):
            assert value(metrics, name, **labels, livemode=mode) == 0, (name, labels, mode)


async def test_payouts_by_status_once_per_payout_and_status(store: Store) -> None:
    paid = se.payout(status="paid", amount=120000, payout_id="po_1")
    failed = se.payout(status="failed", amount=120000, payout_id="po_1", failure_code="account_closed")
    for evt in (se.event("payout.paid", paid), se.event("payout.paid", paid),  # the same payout twice
                se.event("payout.failed", failed),
                se.event("payout.failed", se.payout(status="failed", failure_code="a_new_code"))):
        await record(store, evt)
    metrics = await figures(store)
    assert value(metrics, "billingwatch_payouts_total", status="paid", currency="usd", livemode="false") == 1
    assert value(metrics, "billingwatch_payouts_total", status="failed", currency="usd", livemode="false") == 2
    assert value(metrics, "billingwatch_payout_amount_total", status="paid", currency="usd",
                 livemode="false") == pytest.approx(1200.00)
    assert value(metrics, "billingwatch_payout_failures_total", reason="account_closed", livemode="false") == 1
    assert value(metrics, "billingwatch_payout_failures_total", reason="other", livemode="false") == 1


async def test_dispute_outcomes_lost_amount_and_funds(store: Store) -> None:
    lost = se.dispute(amount=4000, currency="eur", dispute_id="dp_lost")
    lost["status"] = "lost"
    won = se.dispute(dispute_id="dp_won")
    won["status"] = "won"
    inquiry = se.dispute(dispute_id="dp_inquiry")
    inquiry["status"] = "warning_closed"
    for evt in (se.event("charge.dispute.closed", lost), se.event("charge.dispute.closed", lost),
                se.event("charge.dispute.closed", won), se.event("charge.dispute.closed", inquiry),
                se.event("charge.dispute.funds_withdrawn", lost), se.event("charge.dispute.funds_withdrawn", lost),
                se.event("charge.dispute.funds_reinstated", won)):
        await record(store, evt)
    metrics = await figures(store)
    for outcome in ("lost", "won", "warning_closed"):
        assert value(metrics, "billingwatch_disputes_closed_total", outcome=outcome, livemode="false") == 1
    assert value(metrics, "billingwatch_dispute_lost_amount_total", currency="eur",
                 livemode="false") == pytest.approx(40.00)
    assert value(metrics, "billingwatch_dispute_fund_movements_total", movement="withdrawn", livemode="false") == 1
    assert value(metrics, "billingwatch_dispute_fund_amount_total", movement="withdrawn", currency="eur",
                 livemode="false") == pytest.approx(40.00)
    assert value(metrics, "billingwatch_dispute_fund_movements_total", movement="reinstated", livemode="false") == 1


async def test_payment_intent_failures_by_code_never_in_the_charge_families(store: Store) -> None:
    for code in ("authentication_required", "authentication_required", "card_declined", "expired_card", None):
        await record(store, se.event("payment_intent.payment_failed", se.payment_intent_failed(code=code)))
    await record(store, se.event("invoice.payment_action_required", se.invoice(status="open")))
    metrics = await figures(store)
    pi = "billingwatch_payment_intent_failures_total"
    assert value(metrics, pi, code="authentication_required", livemode="false") == 2
    assert value(metrics, pi, code="card_declined", livemode="false") == 1
    assert value(metrics, pi, code="other", livemode="false") == 2
    assert value(metrics, "billingwatch_charge_outcomes_total", status="failed", livemode="false") == 0
    assert value(metrics, "billingwatch_invoices_action_required_total", livemode="false") == 1


async def test_uncollectible_invoices_count_once_with_what_was_left(store: Store) -> None:
    bad = se.invoice(total=9000, status="uncollectible", invoice_id="in_bad")
    bad["amount_remaining"] = 7000
    await record(store, se.event("invoice.marked_uncollectible", bad))
    await record(store, se.event("invoice.marked_uncollectible", bad))  # another event, same invoice
    metrics = await figures(store)
    assert value(metrics, "billingwatch_invoices_uncollectible_total", currency="usd", livemode="false") == 1
    assert value(metrics, "billingwatch_invoice_uncollectible_amount_total", currency="usd",
                 livemode="false") == pytest.approx(70.00)


async def test_reviews_open_now_and_the_oldest_whatever_the_order(store: Store) -> None:
    now = int(time.time())
    first, second = now - 5 * HOUR, now - HOUR
    opened = [se.review(review_id=f"prv_{n}", created=at) for n, at in (("a", first), ("b", second), ("c", now))]
    for review in opened:
        await record(store, se.event("review.opened", review, created=review["created"]))
    await record(store, se.event("review.opened", opened[0]))  # another event about the same review

    async def state() -> tuple[float, float, float, float]:
        metrics = await figures(store)
        return (value(metrics, "billingwatch_reviews_open", livemode="false"),
                value(metrics, "billingwatch_review_oldest_open_timestamp_seconds", livemode="false"),
                value(metrics, "billingwatch_reviews_opened_total", reason="rule", livemode="false"),
                value(metrics, "billingwatch_reviews_closed_total", reason="approved", livemode="false"))

    assert await state() == (3, first, 3, 0)
    closed_a = se.review(review_id="prv_a", is_open=False, created=first)
    await record(store, se.event("review.closed", closed_a))
    await record(store, se.event("review.closed", closed_a))
    assert await state() == (2, second, 3, 1)
    # Closed before its opening arrives: it never counts as open.
    late = se.review(review_id="prv_late", created=now - 9 * HOUR)
    await record(store, se.event("review.closed", se.review(review_id="prv_late", is_open=False,
                                                            created=late["created"])))
    await record(store, se.event("review.opened", late, created=late["created"]))
    assert await state() == (2, second, 4, 2)
    for review in opened[1:]:
        review.update(open=False, closed_reason="approved")
        await record(store, se.event("review.closed", review))
    assert await state() == (0, 0, 4, 4)


async def test_history_moves_review_state_but_no_live_counter(store: Store) -> None:
    recorder = Recorder(store, build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL)
    at = int(time.time()) - 3 * HOUR
    review = se.review(review_id="prv_old", created=at)
    failed = se.payout(status="failed", failure_code="account_closed")
    await recorder.record_many([se.event("review.opened", review, created=at),
                                se.event("payout.failed", failed)], history=True)
    metrics = await figures(store)
    assert value(metrics, "billingwatch_reviews_open", livemode="false") == 1
    assert value(metrics, "billingwatch_review_oldest_open_timestamp_seconds", livemode="false") == at
    assert value(metrics, "billingwatch_reviews_opened_total", reason="rule", livemode="false") == 0
    assert value(metrics, "billingwatch_payout_failures_total", reason="account_closed", livemode="false") == 0
    # Its closing, live, counts and closes it; the live redelivery of the payout counts nothing.
    await record(store, se.event("review.closed", se.review(review_id="prv_old", is_open=False, created=at)))
    await record(store, se.event("payout.failed", failed))
    metrics = await figures(store)
    assert value(metrics, "billingwatch_reviews_open", livemode="false") == 0
    assert value(metrics, "billingwatch_reviews_closed_total", reason="approved", livemode="false") == 1
    assert value(metrics, "billingwatch_payout_failures_total", reason="account_closed", livemode="false") == 0


async def test_a_malformed_signal_is_refused_with_a_reason(store: Store) -> None:
    from billingwatch.recording.events import InvalidEvent

    broken = se.review()
    broken["open"] = "yes"
    with pytest.raises(InvalidEvent, match=r"review\.open"):
        await record(store, se.event("review.opened", broken))
    payout = se.payout(amount=-5)
    with pytest.raises(InvalidEvent, match=r"payout\.amount"):
        await record(store, se.event("payout.paid", payout))


@pytest.mark.parametrize("bad", [{"gauges": ()}, {"gauges": ("rvn|false",)}, {"at": 10**11}])
async def test_a_malformed_track_check_is_refused_before_any_write(store: Store, bad: dict[str, object]) -> None:
    from billingwatch.recording.plan import Check, Plan
    from billingwatch.store import Unrecordable

    track = Check(**{"op": "track", "key": "reviews:false", "member": "prv_x", "at": 1, "ttl": 60, "amount": 1,
                     "gauges": ("rvn|false", "rvt|false"), **bad})  # type: ignore[arg-type]
    with pytest.raises(Unrecordable, match="track check"):
        await store.apply(Plan(event_id="evt_bad_track", dedup_ttl=60, counters={"x|before": 1}, checks=[track]))
    snapshot = await store.snapshot(time.time(), 0)
    assert snapshot.counters.get("x|before", 0) == 0 and "rvn|false" not in snapshot.gauges
    assert not (await store.recorded([("evt_bad_track", "false")]))[0]
