"""`billingwatch backfill` and `reconcile` against a local server that answers like Stripe's Events API."""

import time
from collections.abc import Iterator
from typing import Any

import pytest

from billingwatch.cli import main
from billingwatch.fixtures import stripe_events as se
from testkit.processes import Exporter
from tests.conftest import SECRET, running_exporter
from tests.metrics import anomalies, live_counts, moved, recorded_figures, scrape, total
from tests.replay_helpers import deliver_live
from tests.stripe_api_server import API_KEY, stripe_events_api

DAY = 86400


def history(now: int) -> list[dict[str, Any]]:
    """Two weeks of events (one pair is a duplicate charge), and one from 40 days ago."""
    events = [
        se.event("charge.succeeded", se.charge(customer=f"cus_bf{i}", amount=1000 + i), created=now - i * DAY)
        for i in range(1, 15)
    ]
    events += [
        se.event("charge.succeeded", se.charge(customer="cus_twice", charge_id="ch_bf_a"), created=now - 2 * DAY),
        se.event("charge.succeeded", se.charge(customer="cus_twice", charge_id="ch_bf_b"), created=now - 2 * DAY + 30),
        se.event("customer.created", {"id": "cus_new", "object": "customer"}, created=now - DAY),  # not subscribed
        se.event("charge.succeeded", se.charge(customer="cus_old"), created=now - 40 * DAY),  # past retention
    ]
    return events


@pytest.fixture
def api_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_prefix: str) -> dict[str, str]:
    env = {"STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_API_KEY": API_KEY, "REDIS_URL": redis_url,
           "BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def exporter(api_env: dict[str, str]) -> Iterator[Exporter]:
    with running_exporter(**api_env) as running:
        yield running


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_backfill_pages_through_the_api_retries_a_429_and_records_each_event_once(
    exporter: Exporter, capsys: pytest.CaptureFixture[str], now: int
) -> None:
    before = scrape(exporter.url)
    with stripe_events_api(history(now), page_size=4) as api:
        code, out, err = run(capsys, "backfill", "--since", "30d", "--api-base", api.url, "--url", exporter.url,
                             "--no-subscriptions")
        assert code == 0, err
        assert "backfill: 16 events: 16 accepted, 0 duplicate, 0 rejected, 0 failed; 1 anomalies found" in out
        assert api.subscription_requests == [] and "subscriptions seeded" not in out  # --no-subscriptions
        assert api.statuses[0] == 429 and set(api.statuses[1:]) == {200}  # the SDK retried the 429
        assert api.http_libraries == {"httpx"}  # one HTTP client stack: the SDK on httpx, not requests
        pages = api.requests[1:]
        assert len(pages) == 4 and all("starting_after" in q for q in pages[1:])  # has_more pagination
        since = int(pages[0]["created[gte]"][0])
        assert abs(since - (time.time() - 30 * DAY)) < 60
        assert "customer.created" not in {v for k, vs in pages[0].items() if k.startswith("types[") for v in vs}
        # History, not traffic: no live count moved, the imported events and the old duplicate
        # charge are counted apart, and the anomaly is listed as found in history.
        figures = scrape(exporter.url)
        assert moved(live_counts(before), live_counts(figures)) == {}
        assert total(figures, "billingwatch_history_events_total") == 16
        assert total(figures, "billingwatch_history_anomalies_total", detector="duplicate_charge") == 1
        [record] = anomalies(exporter.url)
        assert (record["detector"], record["history"]) == ("duplicate_charge", True)
        assert {record["charge"], *record["related"]} == {"ch_bf_a", "ch_bf_b"}  # type: ignore[misc]
        assert record["event_created"] in (now - 2 * DAY, now - 2 * DAY + 30)  # event time, 2 days back

        code, out, _ = run(capsys, "backfill", "--since", "30d", "--api-base", api.url, "--direct")
        assert code == 0 and "16 events: 0 accepted, 16 duplicate" in out
        assert moved(figures, scrape(exporter.url)) == {}


def test_backfill_help_says_stripe_keeps_30_days(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["backfill", "--help"])
    assert "30 days" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["backfill", "--since", "31d"])
    assert "Stripe keeps events for 30 days only" in capsys.readouterr().err


@pytest.mark.parametrize(("key", "message"), [
    ("", "STRIPE_API_KEY is not set"),
    ("sk_test_secret", "give a restricted key"),
    ("rk_test_wrong", "Stripe refused STRIPE_API_KEY"),
])
def test_a_missing_secret_or_refused_key_is_a_one_line_error(
    key: str, message: str, api_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    now: int,
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", key)
    with stripe_events_api(history(now), fail_first=False) as api:
        code, _, err = run(capsys, "backfill", "--api-base", api.url, "--direct")
    assert code == 2 and message in err and "Traceback" not in err


def test_reconcile_finds_counts_once_and_replays_the_missed_events(
    exporter: Exporter, capsys: pytest.CaptureFixture[str], now: int
) -> None:
    def charge(customer: str, created: int) -> dict[str, Any]:
        return se.event("charge.succeeded", se.charge(customer=customer), created=created)

    delivered = [charge(f"cus_rc{i}", now - 1800 - i * DAY) for i in range(5)]
    missed = [charge("cus_lost1", now - 3600), charge("cus_lost2", now - 3 * DAY), charge("cus_lost3", now - 5 * DAY)]
    events = delivered + missed
    in_flight = charge("cus_in_flight", now - 60)  # not delivered yet, and younger than the grace
    deliver_live(exporter.url, delivered)
    with stripe_events_api([*events, in_flight]) as api:
        code, out, err = run(capsys, "reconcile", "--since", "24h", "--api-base", api.url)
        assert code == 1, err  # missed events remain
        assert "reconcile: 2 events listed by Stripe, 1 missed (1 newly counted" in out  # only the last day
        code, out, _ = run(capsys, "reconcile", "--since", "30d", "--api-base", api.url)
        lines = [line for line in out.splitlines() if line.startswith("missed ")]
        assert sorted(line.split()[1] for line in lines) == sorted(e["id"] for e in missed)
        assert "8 events listed by Stripe, 3 missed (2 newly counted" in out  # in_flight is within the grace
        assert total(scrape(exporter.url), "billingwatch_missed_events_total", livemode="false") == 3

        code, out, _ = run(capsys, "reconcile", "--since", "30d", "--api-base", api.url)
        assert "3 missed (0 newly counted" in out  # counted once however often reconcile runs
        assert total(scrape(exporter.url), "billingwatch_missed_events_total") == 3

        code, out, err = run(capsys, "reconcile", "--since", "30d", "--api-base", api.url, "--replay")
        assert code == 0, err
        assert "reconcile --replay: 3 events: 3 accepted, 0 duplicate, 0 rejected, 0 failed" in out
        figures = scrape(exporter.url)
        assert total(figures, "billingwatch_events_total") == 5  # the live ones; the missed are history
        assert total(figures, "billingwatch_history_events_total") == 3
        assert total(figures, "billingwatch_missed_events_total") == 3

        code, out, _ = run(capsys, "reconcile", "--since", "30d", "--api-base", api.url)
        assert code == 0 and "8 events listed by Stripe, 0 missed" in out


def test_reconcile_needs_the_shared_store(monkeypatch: pytest.MonkeyPatch, api_env: dict[str, str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("REDIS_URL")
    code, _, err = run(capsys, "reconcile", "--api-base", "http://127.0.0.1:9")
    assert code == 2 and "REDIS_URL is not set" in err


def test_backfill_direct_in_small_batches_records_what_http_does(
    exporter: Exporter, api_env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    now: int,
) -> None:
    """Pipelined batches (3 events each, so the duplicate-charge pair spans two) give the figures
    and anomalies that one request per event gives."""
    direct_env = {**api_env, "BILLINGWATCH_REDIS_PREFIX": api_env["BILLINGWATCH_REDIS_PREFIX"] + "_direct"}
    with stripe_events_api(history(now), fail_first=False) as api, running_exporter(**direct_env) as direct:
        code, out, err = run(capsys, "backfill", "--api-base", api.url, "--url", exporter.url, "--concurrency", "1")
        assert code == 0 and "16 events: 16 accepted" in out, err
        monkeypatch.setenv("BILLINGWATCH_REDIS_PREFIX", direct_env["BILLINGWATCH_REDIS_PREFIX"])
        for accepted in (16, 0):
            code, out, err = run(capsys, "backfill", "--api-base", api.url, "--direct", "--batch-size", "3")
            assert code == 0 and f"16 events: {accepted} accepted, {16 - accepted} duplicate" in out, err
            assert recorded_figures(direct.url) == recorded_figures(exporter.url)
            assert [{k: v for k, v in a.items() if k not in ("charge", "related")} for a in anomalies(direct.url)] == [
                {k: v for k, v in a.items() if k not in ("charge", "related")} for a in anomalies(exporter.url)]
