"""`billingwatch backfill` seeds today's subscriptions from Stripe's Subscriptions API as history, so MRR
is right on day one; against a real exporter, a real redis-server and a local Stripe-shaped API."""

import time
from typing import Any

import pytest

from billingwatch.cli import main
from billingwatch.commands.backfill import seed_event
from billingwatch.fixtures import stripe_events as se
from testkit.processes import Exporter
from tests import test_backfill
from tests.metrics import gauge_value, increase, live_counts, moved, recorded_figures, scrape
from tests.replay_helpers import deliver_live
from tests.stripe_api_server import stripe_events_api
from tests.test_backfill import run

# The event backfill tests' fixtures: the API key environment and an exporter on it.
api_env = test_backfill.api_env
exporter = test_backfill.exporter

DAY = 86400


@pytest.fixture(params=["http", "direct"])
def sink(request: pytest.FixtureRequest, exporter: Exporter) -> list[str]:
    """How backfill records: signed webhooks with the replay header, or straight into the store."""
    return ["--url", exporter.url] if request.param == "http" else ["--direct"]


def sub(subscription_id: str, **fields: Any) -> dict[str, Any]:
    """A subscription as the Subscriptions API lists it, created 200 days ago unless told."""
    return se.subscription(subscription_id=subscription_id, customer="cus_" + subscription_id[4:],
                           **{"created": int(time.time()) - 200 * DAY, **fields})


def mrr(samples: Any, currency: str) -> float:
    return gauge_value(samples, "billingwatch_mrr_amount", currency=currency, livemode="false")


def held(samples: Any, status: str) -> float:
    return gauge_value(samples, "billingwatch_subscriptions", status=status, livemode="false")


def test_backfill_seeds_subscriptions_with_no_recent_event_as_history(
    exporter: Exporter, sink: list[str], capsys: pytest.CaptureFixture[str], now: int
) -> None:
    # The store holds an active snapshot from an event 90 days old; Stripe has since ended it.
    deliver_live(exporter.url, [se.event("customer.subscription.created", sub("sub_gone", unit_amount=3000),
                                         created=now - 90 * DAY)])
    listed = [
        sub("sub_quiet", unit_amount=10000),  # 100.00 usd a month; no event for 200 days
        sub("sub_yearly", unit_amount=120000, currency="eur", interval="year"),  # 100.00 eur a month
        sub("sub_trial", status="trialing", unit_amount=5000),  # holds no MRR
        sub("sub_seats", unit_amount=2000, quantity=3),  # 60.00 usd today ...
        sub("sub_gone", status="canceled", unit_amount=3000, created=now - 60 * DAY),
    ]
    # ... but its newest event in the Events API (10 days old) still says 1 seat: the listing is newer.
    events = [se.event("customer.subscription.updated", sub("sub_seats", unit_amount=2000, quantity=1),
                       created=now - 10 * DAY)]
    before = scrape(exporter.url)
    assert (mrr(before, "usd"), held(before, "active")) == (30.0, 1.0)
    with stripe_events_api(events, subscriptions=listed, page_size=2) as api:
        code, out, err = run(capsys, "backfill", "--api-base", api.url, *sink)
        assert code == 0, err
        assert "subscriptions seeded: 5 listed (1 ended): 5 recorded, 0 unchanged since the last seed, " \
               "0 rejected, 0 failed" in out
        assert "backfill: 1 events: 1 accepted" in out
        first, *rest = api.subscription_requests[1:]  # after the SDK retried the first call's 429
        assert (first["status"], first["limit"]) == (["all"], ["100"])
        assert len(rest) == 2 and all("starting_after" in q for q in rest)  # has_more pagination
        after, figures = scrape(exporter.url), recorded_figures(exporter.url)
        # Right on day one: every paying subscription counts, the listing beats the older event,
        # the ended one takes back what its stale snapshot held.
        assert (mrr(after, "usd"), mrr(after, "eur")) == (160.0, 100.0)
        assert (held(after, "active"), held(after, "trialing"), held(after, "canceled")) == (3.0, 1.0, 0.0)
        # History, not traffic: no live counter moved (not even subscriptions ended).
        assert moved(live_counts(before), live_counts(after)) == {}
        assert increase(before, after, "billingwatch_history_events_total", type="customer.subscription.updated") == 6

        # Again: nothing changed at Stripe, so every seed and event is a duplicate and no figure moves.
        code, out, err = run(capsys, "backfill", "--api-base", api.url, *sink)
        assert code == 0, err
        assert "5 listed (1 ended): 0 recorded, 5 unchanged since the last seed" in out
        assert "backfill: 1 events: 0 accepted, 1 duplicate" in out
        assert moved(figures, recorded_figures(exporter.url)) == {}


def test_a_live_event_newer_than_the_listing_wins(
    exporter: Exporter, sink: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed is stamped just before the listing began: it never hides a newer event, whether that
    arrived before the backfill or after it."""
    listed = [sub("sub_early", unit_amount=10000), sub("sub_late", unit_amount=10000)]
    now = int(time.time())
    # Delivered before the backfill, but created after the listing will begin (Stripe's clock may run
    # ahead of ours by less than the signature tolerance): 2 seats.
    deliver_live(exporter.url, [se.event("customer.subscription.updated",
                                         sub("sub_early", unit_amount=10000, quantity=2), created=now + 60)])
    with stripe_events_api([], subscriptions=listed, fail_first=False) as api:
        code, out, err = run(capsys, "backfill", "--api-base", api.url, *sink)
    assert code == 0 and "2 listed (0 ended): 2 recorded" in out, err
    assert mrr(scrape(exporter.url), "usd") == 200.0 + 100.0  # sub_early kept its newer 2 seats
    # A live change right after the backfill: 5 seats of sub_late (created this second or later).
    deliver_live(exporter.url, [se.event("customer.subscription.updated",
                                         sub("sub_late", unit_amount=10000, quantity=5), created=int(time.time()))])
    assert mrr(scrape(exporter.url), "usd") == 200.0 + 500.0


def test_the_seed_is_stamped_on_stripes_clock_when_ours_runs_ahead(
    exporter: Exporter, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stripe's clock 120 s behind ours: an event Stripe created 100 s ago by our clock came after the
    listing began by its clock, so it must beat the seed (stamped by our clock it would not)."""
    deliver_live(exporter.url, [se.event("customer.subscription.updated",
                                         sub("sub_skew", unit_amount=10000, quantity=2),
                                         created=int(time.time()) - 100)])
    with stripe_events_api([], subscriptions=[sub("sub_skew", unit_amount=10000)], fail_first=False,
                           clock_offset=-120) as api:
        code, out, err = run(capsys, "backfill", "--api-base", api.url, "--direct")
    assert code == 0 and "1 listed (0 ended): 1 recorded" in out, err
    assert mrr(scrape(exporter.url), "usd") == 200.0


def test_a_key_without_subscriptions_read_is_a_one_line_error_before_anything_is_recorded(
    exporter: Exporter, api_env: dict[str, str], capsys: pytest.CaptureFixture[str], now: int
) -> None:
    events = [se.event("charge.succeeded", se.charge(customer="cus_ev"), created=now - DAY)]
    before = recorded_figures(exporter.url)
    with stripe_events_api(events, subscriptions=[sub("sub_x")], forbidden=("/v1/subscriptions",),
                           fail_first=False) as api:
        code, out, err = run(capsys, "backfill", "--api-base", api.url, "--direct")
        assert code == 2 and "Traceback" not in err
        assert err.strip().splitlines() == [
            "billingwatch: STRIPE_API_KEY may not read Subscriptions: give the restricted key Subscriptions "
            "read access, or run backfill with --no-subscriptions"]
        assert api.requests == []  # the events were not read either: nothing half-done
        assert recorded_figures(exporter.url) == before
        # Without the seeding the same key backfills the events.
        code, out, err = run(capsys, "backfill", "--api-base", api.url, "--direct", "--no-subscriptions")
        assert code == 0 and "backfill: 1 events: 1 accepted" in out and "subscriptions seeded" not in out, err


def test_a_listing_that_fails_midway_leaves_correct_snapshots_and_a_second_run_finishes(
    exporter: Exporter, api_env: dict[str, str], capsys: pytest.CaptureFixture[str], now: int
) -> None:
    listed = [sub(f"sub_page{i}", unit_amount=1000, created=now - i * DAY) for i in range(1, 5)]  # 2 pages
    with stripe_events_api([], subscriptions=listed, page_size=2, fail_first=False, broken_after=1) as api:
        # One event per store round trip, so the first page is recorded before the second is asked for.
        code, out, err = run(capsys, "backfill", "--api-base", api.url, "--direct", "--max-network-retries", "0",
                             "--batch-size", "1")
        assert code == 1 and "Traceback" not in err
        assert err.strip().splitlines() == [
            "billingwatch: Stripe Subscriptions API: APIError: Something went wrong on Stripe's end."]
        assert api.requests == []  # the events were not read
        assert mrr(scrape(exporter.url), "usd") == 20.0  # the first page's two: each a correct snapshot
        api.broken_after = None
        code, out, err = run(capsys, "backfill", "--api-base", api.url, "--direct")
        assert code == 0 and "4 listed (0 ended): 2 recorded, 2 unchanged since the last seed" in out, err
        assert mrr(scrape(exporter.url), "usd") == 40.0


def test_a_seed_is_a_marked_synthetic_event_named_by_its_content(now: int) -> None:
    subscription = sub("sub_seed", unit_amount=10000)
    seeded = seed_event(subscription, now)
    assert seeded["id"].startswith("seed_sub_seed_") and not seeded["id"].startswith("evt_")
    assert (seeded["type"], seeded["created"], seeded["livemode"]) == ("customer.subscription.updated", now, False)
    assert seeded["data"] == {"object": subscription}
    assert seed_event(subscription, now + 100)["id"] == seeded["id"]  # unchanged: the same seed
    assert seed_event({**subscription, "status": "past_due"}, now)["id"] != seeded["id"]


def test_backfill_help_names_the_key_permissions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["backfill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Events and Subscriptions" in text and "--no-subscriptions" in text
