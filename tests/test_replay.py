"""`billingwatch replay`: a recorded scenario fed back gives the state live delivery gave, counted as history."""

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis

from billingwatch.detectors import build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.events import InvalidEvent
from billingwatch.recording.recorder import LivemodeRejected, Recorder
from billingwatch.store import MemoryStore, RedisStore, Store, StoreUnavailable, Unrecordable
from testkit.processes import RedisServer, wait_until
from tests.conftest import SECRET, running_exporter
from tests.metrics import (
    Samples,
    anomalies,
    live_counts,
    recorded_figures,
    renamed,
    scrape,
    state_figures,
    total,
)
from tests.recording import DEDUP_TTL, SUBSCRIPTION_TTL, figures
from tests.replay_helpers import billingwatch, billingwatch_process, deliver_live, summary_counts, write_jsonl


@pytest.fixture
def t0(now: int) -> int:
    """An hour before the test started."""
    return now - 3600


def scenario(t0: int) -> list[dict[str, Any]]:
    """Normal traffic plus one case for each stateful detector, and one redelivered event."""
    ev = se.event
    first = ev("charge.succeeded", se.charge(charge_id="ch_r1", customer="cus_dup", amount=2000), created=t0)
    events = [
        first,
        ev("charge.succeeded", se.charge(charge_id="ch_r2", customer="cus_dup", amount=2000), created=t0 + 60),
        ev("invoice.finalized", se.invoice(total=-500, customer="cus_neg", subscription="sub_neg",
                                           billing_reason="subscription_update"), created=t0 + 70),
        ev("charge.succeeded", se.charge(charge_id="ch_r3", customer="cus_cur", currency="usd"), created=t0 + 80),
        ev("charge.succeeded", se.charge(charge_id="ch_r4", customer="cus_cur", currency="eur"), created=t0 + 90),
        ev("invoice.created", se.invoice(invoice_id="in_r1", subscription="sub_dbl", created=t0), created=t0 + 100),
        ev("invoice.created", se.invoice(invoice_id="in_r2", subscription="sub_dbl", created=t0 + 3600),
           created=t0 + 110),
        ev("customer.subscription.created", se.subscription(subscription_id="sub_ok", customer="cus_ok"),
           created=t0 + 120),
        ev("charge.failed", se.charge(status="failed", reason="insufficient_funds", customer="cus_ok"),
           created=t0 + 130),
        ev("refund.created", se.refund(charge_id="ch_r3"), created=t0 + 140),
        ev("charge.dispute.created", se.dispute(charge_id="ch_r3"), created=t0 + 150),
        ev("radar.early_fraud_warning.created", se.early_fraud_warning(charge_id="ch_r3"), created=t0 + 160),
    ]
    return [*events, first]  # Stripe redelivers the first event


def assert_history_of(replayed_url: str, live_url: str) -> Samples:
    """The replayed exporter holds what live delivery built, as history: same state, same events
    and anomalies counted in the history families, no live count, anomalies marked history."""
    live, replayed = scrape(live_url), scrape(replayed_url)
    assert state_figures(replayed) == state_figures(live)
    assert renamed(replayed, "billingwatch_history_events_total", "e") == renamed(
        live, "billingwatch_events_total", "e")
    assert renamed(replayed, "billingwatch_history_anomalies_total", "a") == renamed(
        live, "billingwatch_anomalies_total", "a")
    assert {k: v for k, v in live_counts(replayed).items() if v} == {}
    assert anomalies(replayed_url) == [{**a, "history": True} for a in anomalies(live_url)]
    return replayed


def test_replay_over_http_records_the_live_state_as_history_and_twice_changes_nothing(tmp_path: Path, t0: int) -> None:
    events = scenario(t0)
    path = write_jsonl(tmp_path / "scenario.jsonl", events)
    with running_exporter() as live, running_exporter() as replayed:
        deliver_live(live.url, events)
        # One at a time: which charge of a pair an anomaly names depends on the order (compared exactly below).
        result = billingwatch("replay", str(path), "--url", replayed.url, "--concurrency", "1")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (
            f"replay: {len(events)} events: {len(events) - 1} accepted, 1 duplicate, 0 rejected, 0 failed; "
            "4 anomalies found"
        )
        figures = assert_history_of(replayed.url, live.url)
        for detector in ("duplicate_charge", "negative_invoice", "currency_mismatch", "double_invoice"):
            assert total(figures, "billingwatch_history_anomalies_total", detector=detector) == 1
        assert all(a["history"] is False for a in anomalies(live.url))

        expected = recorded_figures(replayed.url)
        again = billingwatch("replay", str(path), "--url", replayed.url)
        assert again.returncode == 0, again.stderr
        assert f"0 accepted, {len(events)} duplicate" in again.stdout
        assert recorded_figures(replayed.url) == expected
        assert len(anomalies(replayed.url)) == 4


def test_replay_direct_into_redis_matches_http_delivery(tmp_path: Path, redis_url: str, redis_prefix: str,
                                                        t0: int) -> None:
    events = scenario(t0)
    path = write_jsonl(tmp_path / "scenario.jsonl", events)
    env = {"REDIS_URL": redis_url, "BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    with running_exporter() as live, running_exporter(**env) as shared:
        deliver_live(live.url, events)
        for run in range(2):
            result = billingwatch("replay", "--direct", str(path), env=env)
            assert result.returncode == 0, result.stderr
            accepted = len(events) - 1 if run == 0 else 0
            assert f"{accepted} accepted, {len(events) - accepted} duplicate, 0 rejected" in result.stdout
            # The exporter reads the same Redis: it holds the live state, counted as history.
            assert_history_of(shared.url, live.url)


def test_bad_lines_are_rejected_with_their_reason_and_stdin_works() -> None:
    good = se.event("charge.succeeded", se.charge(customer="cus_stdin"))
    lines = [json.dumps(good), "{not json", json.dumps({"object": "customer", "id": "cus_x"}), ""]
    with running_exporter() as exporter:
        result = billingwatch("replay", "-", "--url", exporter.url, stdin="\n".join(lines) + "\n")
        assert result.returncode == 1
        assert "1 accepted, 0 duplicate, 2 rejected, 0 failed" in result.stdout
        assert "stdin:2: rejected: not JSON" in result.stderr
        assert 'stdin:3: rejected: not a Stripe event (object must be "event")' in result.stderr
        assert "Traceback" not in result.stderr
        assert total(scrape(exporter.url), "billingwatch_history_events_total") == 1


def test_direct_without_redis_url_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "one.jsonl", [se.event("charge.succeeded", se.charge())])
    result = billingwatch("replay", "--direct", str(path))
    assert result.returncode == 2
    assert "REDIS_URL is not set" in result.stderr and "Traceback" not in result.stderr


def test_503_while_the_store_is_down_is_retried_until_it_is_back(tmp_path: Path) -> None:
    """Like Stripe: an event answered 503 is sent again (bounded), and counted once in the end."""
    redis = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    events = [se.event("charge.succeeded", se.charge(customer=f"cus_retry{i}")) for i in range(3)]
    path = write_jsonl(tmp_path / "retry.jsonl", events)
    with running_exporter(REDIS_URL=redis.url) as exporter:
        assert httpx.get(exporter.url + "/ready").status_code == 503
        def start_after_a_503() -> None:  # not after a fixed delay: the command may start slowly
            wait_until(lambda: total(scrape(exporter.url), "billingwatch_import_requests_total",
                                     result="store_unavailable") >= 1, what="a 503")
            redis.start()

        timer = threading.Thread(target=start_after_a_503)
        timer.start()
        try:
            result = billingwatch("replay", str(path), "--url", exporter.url, "--retries", "6")
            timer.join()
            assert result.returncode == 0, result.stderr
            assert "3 accepted, 0 duplicate, 0 rejected, 0 failed" in result.stdout
            figures = scrape(exporter.url)
            assert total(figures, "billingwatch_history_events_total") == 3
            assert total(figures, "billingwatch_import_requests_total", result="store_unavailable") >= 1
        finally:
            timer.join()
            redis.stop()


@pytest.mark.parametrize("args", [["--url", "ftp://x"], ["/nonexistent.jsonl"]])
def test_bad_arguments_give_one_line_errors(args: list[str], tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "one.jsonl", [se.event("charge.succeeded", se.charge())])
    result = billingwatch("replay", str(path), *args)
    assert result.returncode == 2
    assert result.stderr.startswith("billingwatch: ") and "Traceback" not in result.stderr


def make_store(kind: str, redis_server: RedisServer) -> Store:
    if kind == "memory":
        return MemoryStore()
    return RedisStore(redis_server.url, prefix="t" + uuid.uuid4().hex[:12])


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["memory", "redis"])
@pytest.mark.parametrize("batch", [1, 5, 100])
async def test_pipelined_batches_record_what_one_by_one_does_and_twice_changes_nothing(
    kind: str, batch: int, redis_server: RedisServer, t0: int
) -> None:
    """record_many (replay --direct, backfill --direct) against record(), one event at a time:
    the same figures and anomalies; a redelivery in the same batch or a later one is a duplicate;
    a bad event in a batch is refused alone; the whole replay again changes nothing."""
    events = [*scenario(t0), {"object": "event", "id": "evt_bad"}]
    one_by_one, pipelined = make_store(kind, redis_server), make_store(kind, redis_server)
    clock = lambda: float(t0 + 3600)  # noqa: E731 -- one receipt time for both: anomalies carry none, but plans may
    single = Recorder(one_by_one, build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL, clock)
    many = Recorder(pipelined, build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL, clock)
    expected: list[str] = []
    for evt in events:
        try:
            expected.append("duplicate" if (await single.record(evt, history=True)).duplicate else "accepted")
        except InvalidEvent:
            expected.append("invalid")
    try:
        for run in range(2):
            got: list[str] = []
            for start in range(0, len(events), batch):
                for result in await many.record_many(events[start:start + batch], history=True):
                    assert not isinstance(result, StoreUnavailable | Unrecordable | LivemodeRejected), result
                    got.append("invalid" if isinstance(result, InvalidEvent)
                               else "duplicate" if result.duplicate else "accepted")
            assert got == (expected if run == 0 else ["invalid" if g == "invalid" else "duplicate" for g in expected])
            assert expected.count("duplicate") == 1 and expected.count("invalid") == 1
            assert await figures(pipelined) == await figures(one_by_one)
            assert await pipelined.anomalies(100) == await one_by_one.anomalies(100)
            assert len(await pipelined.anomalies(100)) == 4
    finally:
        await one_by_one.close()
        await pipelined.close()


def test_direct_replay_across_a_redis_restart_mid_batch_counts_every_event_once(
    tmp_path: Path, redis_prefix: str, t0: int
) -> None:
    """Redis stopped while `replay --direct` sends its batches, then started again: the retried
    batches' events that had run come back duplicates, the others are recorded; each counts once."""
    redis = RedisServer(tmp_path / "redis", appendonly=True)  # keeps what it acknowledged across the restart
    (tmp_path / "redis").mkdir()
    redis.start()
    events = [se.event("charge.succeeded", se.charge(customer=f"cus_mid{i}", amount=1000 + i), created=t0 + i)
              for i in range(3000)]
    path = write_jsonl(tmp_path / "many.jsonl", events)
    env = {"REDIS_URL": redis.url, "BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    try:
        command = billingwatch_process("replay", "--direct", "--batch-size", "50", "--retries", "8", str(path), env=env)
        client = sync_redis.Redis.from_url(redis.url)
        wait_until(lambda: int(client.dbsize()) >= 300, timeout=60, what="some batches recorded")
        client.close()
        assert command.poll() is None, "the replay ended before Redis was stopped"
        redis.stop()
        time.sleep(1.0)
        redis.start()
        out, err = command.communicate(timeout=120)
        assert command.returncode == 0, err
        counts = summary_counts(out)
        assert counts["accepted"] + counts["duplicate"] == len(events) and counts["failed"] == 0, out
        with running_exporter(**env) as exporter:
            figures_after = scrape(exporter.url)
        assert total(figures_after, "billingwatch_history_events_total") == len(events)
        assert total(figures_after, "billingwatch_history_events_total", type="charge.succeeded") == len(events)
    finally:
        redis.close()


def test_concurrent_replay_over_http_gives_the_figures_of_a_sequential_one(tmp_path: Path, t0: int) -> None:
    events = scenario(t0)
    # 60 pairs of a customer's same-amount charges: 60 more duplicate_charge anomalies, in any order.
    events += [se.event("charge.succeeded", se.charge(customer=f"cus_c{i // 2}", amount=500 + i // 2),
                        created=t0 + 200 + i) for i in range(120)]
    path = write_jsonl(tmp_path / "scenario.jsonl", events)
    with running_exporter() as sequential, running_exporter() as concurrent:
        first = billingwatch("replay", str(path), "--url", sequential.url, "--concurrency", "1")
        second = billingwatch("replay", str(path), "--url", concurrent.url, "--concurrency", "16")
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
        assert first.stdout == second.stdout
        assert recorded_figures(concurrent.url) == recorded_figures(sequential.url)

        def involved(url: str) -> list[tuple[str, ...]]:
            # Which object of a pair an anomaly names first depends on the order they ran in; the pair does not.
            return sorted((str(a["detector"]), *sorted({str(a.get(k)) for k in ("charge", "invoice") if k in a}
                                                       | {str(r) for r in a.get("related", [])}))  # type: ignore[attr-defined]
                          for a in anomalies(url))

        assert involved(concurrent.url) == involved(sequential.url)
        assert len(anomalies(sequential.url)) == 64


def test_progress_bar_on_stderr_only_on_a_terminal_or_with_progress(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [se.event("charge.succeeded", se.charge()) for _ in range(3)])
    with running_exporter() as exporter:
        quiet = billingwatch("replay", str(path), "--url", exporter.url)
        shown = billingwatch("replay", str(path), "--url", exporter.url, "--progress")
    assert quiet.returncode == shown.returncode == 0, (quiet.stderr, shown.stderr)
    assert quiet.stderr == ""  # stderr is a pipe here, not a terminal
    assert "replay: 3event" in shown.stderr  # counted as they go: the file is read once, no total first
    assert "0 accepted, 3 duplicate" in shown.stdout


def test_replay_delivers_after_the_exporter_closed_an_idle_connection(tmp_path: Path) -> None:
    """A kept-alive connection the exporter has since closed is no lost event: the next delivery
    goes out on a new connection (or is retried), and is recorded."""
    import asyncio

    from billingwatch.commands.feed import WebhookSink

    events = [se.event("charge.succeeded", se.charge()) for _ in range(2)]

    async def deliver_apart(url: str) -> list[str]:
        sink = WebhookSink(url + "/webhooks/stripe", SECRET, retries=2)
        results = []
        try:
            for evt in events:
                results.append((await sink.deliver(evt)).result)
                await asyncio.sleep(1.5)  # past the exporter's keep-alive timeout: it closes the connection
        finally:
            await sink.close()
        return results

    with running_exporter(BILLINGWATCH_KEEP_ALIVE_TIMEOUT_SECONDS="1") as exporter:
        results = asyncio.run(deliver_apart(exporter.url))
        assert total(scrape(exporter.url), "billingwatch_events_total", type="charge.succeeded", livemode="false") == 2
    assert results == ["accepted", "accepted"]
