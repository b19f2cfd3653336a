"""Group commit (store/group_commit.py): concurrent webhook requests share pipelined round trips to
Redis, and every event still lands exactly once, also when Redis fails in the middle of a batch.

Real redis-server and `billingwatch serve` processes; deliveries retry every non-2xx as Stripe does
(tests/test_faults.py's Delivery), and the store must end as one clean delivery of each event.
"""

import asyncio
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from billingwatch.detectors import build_detectors
from billingwatch.recording.plan import Plan
from billingwatch.recording.recorder import Recorder
from billingwatch.store import Outcome, RedisStore, StoreUnavailable, Unrecordable
from billingwatch.store.group_commit import GroupCommit
from testkit.processes import RedisServer
from tests.conftest import running_exporter
from tests.metrics import total
from tests.recording import DEDUP_TTL, SUBSCRIPTION_TTL
from tests.test_faults import Delivery, mixed_events, redis_state, reference, requests_by_result


def recorder_with_batches(store: RedisStore, max_batch: int) -> tuple[Recorder, list[int]]:
    """A Recorder whose group commit notes the size of each batch it sends."""
    sizes: list[int] = []

    async def apply_many(plans: Sequence[Plan]) -> list[Outcome | Unrecordable | StoreUnavailable]:
        sizes.append(len(plans))
        return await store.apply_many(plans)

    group = GroupCommit(apply_many, max_batch=max_batch)
    return Recorder(store, build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL, group_commit=group), sizes


def test_concurrent_records_share_bounded_batches_each_with_its_own_outcome(redis_url: str,
                                                                            redis_prefix: str) -> None:
    events = mixed_events(60)

    async def run() -> tuple[list[int], list[Outcome], list[Outcome]]:
        store = RedisStore(redis_url, redis_prefix)
        recorder, sizes = recorder_with_batches(store, max_batch=16)
        try:
            alone = await recorder.record(events[0])  # nothing in flight: a batch of one, at once
            first = await asyncio.gather(*(recorder.record(e) for e in events[1:]))
            again = await asyncio.gather(*(recorder.record(e) for e in events))
        finally:
            await store.close()
        return sizes, [alone, *first], again

    sizes, first, again = asyncio.run(run())
    assert sizes[0] == 1
    assert max(sizes) == 16 and sum(sizes) == 2 * len(events)
    assert len(sizes) < 2 * len(events) / 4
    assert not any(o.duplicate for o in first)
    assert all(o.duplicate and not o.anomalies for o in again)
    expected = reference(events)
    assert sum(len(o.anomalies) for o in first) == total(expected, "billingwatch_anomalies_total") > 0
    assert redis_state(redis_url, redis_prefix) == expected


def test_store_down_every_waiting_record_gets_store_unavailable_then_recovers(tmp_path: Path,
                                                                              redis_prefix: str) -> None:
    server = RedisServer(tmp_path)
    server.start()
    events = mixed_events(24)

    async def run() -> tuple[list[Any], list[Outcome]]:
        store = RedisStore(server.url, redis_prefix)
        recorder, _ = recorder_with_batches(store, max_batch=8)
        try:
            await store.ping()
            server.stop(signal.SIGKILL)
            down = await asyncio.gather(*(recorder.record(e) for e in events), return_exceptions=True)
            server.start()
            up = await asyncio.gather(*(recorder.record(e) for e in events))
        finally:
            await store.close()
        return down, up

    try:
        down, up = asyncio.run(run())
        assert all(isinstance(r, StoreUnavailable) for r in down), down
        assert not any(o.duplicate for o in up)  # nothing ran while it was down
        assert redis_state(server.url, redis_prefix) == reference(events)
    finally:
        server.close()


def test_concurrent_events_from_several_replicas_land_exactly_once(redis_url: str, redis_prefix: str) -> None:
    events = mixed_events(240)
    env = {"REDIS_URL": redis_url, "BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    with running_exporter(**env) as one, running_exporter(**env) as two:
        # Six senders, each with every event, three per replica: each event arrives six times at
        # about the same moment, so batches on both replicas hold copies of the same events.
        delivery = Delivery([one.url, two.url] * 3, events)
        delivery.start(split=False)
        delivery.join()
        first, second = requests_by_result(one.url), requests_by_result(two.url)

    assert delivery.delivered == 6 * len(events)
    assert first["accepted"] + second["accepted"] == len(events)
    assert first["duplicate"] + second["duplicate"] == 5 * len(events)
    state = redis_state(redis_url, redis_prefix)
    expected = reference(events)
    assert total(expected, "billingwatch_anomalies_total") > 0
    assert state == expected


@pytest.fixture
def aof_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path, appendonly=True)
    server.start()
    yield server
    server.stop()


def test_redis_killed_mid_burst_answers_503_and_retries_count_exactly_once(aof_redis: RedisServer,
                                                                          redis_prefix: str) -> None:
    events = mixed_events(240)
    env = {"REDIS_URL": aof_redis.url, "BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    with running_exporter(**env) as one, running_exporter(**env) as two:
        delivery = Delivery([one.url, two.url] * 4, events)
        delivery.start()
        delivery.wait_delivered(40)
        aof_redis.stop(signal.SIGKILL)  # mid-batch: appendfsync always keeps what it answered
        down_since = time.monotonic()
        time.sleep(1.0)
        down_until = time.monotonic()
        aof_redis.start()
        delivery.join()
        results = [requests_by_result(one.url), requests_by_result(two.url)]

    while_down = [a for a in delivery.attempts if a.started > down_since and a.ended < down_until]
    assert while_down, "no attempt was made while Redis was down"
    assert {a.status for a in while_down} == {503}
    assert sum(r.get("store_unavailable", 0) for r in results) >= len(while_down)
    assert delivery.delivered == len(events)
    state = redis_state(aof_redis.url, redis_prefix)
    assert total(state, "billingwatch_events_total") == len(events)
    assert state == reference(events)


def test_connections_killed_during_a_burst_leave_every_count_exact(redis_url: str, redis_prefix: str) -> None:
    events = mixed_events(240)
    env = {"REDIS_URL": redis_url, "BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    killed: list[int] = []
    stop = threading.Event()

    def kill_connections() -> None:
        # CLIENT KILL from another client: cuts the exporters' connections, in the middle of
        # pipelines or between them; an event whose reply was lost is sent again (a 503 and
        # Stripe's retry, or the client's own reconnect) and then comes back a duplicate.
        with redis.Redis.from_url(redis_url) as admin:
            while not stop.wait(0.02):
                killed.append(int(admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")))

    with running_exporter(**env) as one, running_exporter(**env) as two:
        delivery = Delivery([one.url, two.url] * 4, events)
        delivery.start()
        delivery.wait_delivered(20)
        killer = threading.Thread(target=kill_connections, daemon=True)
        killer.start()
        delivery.join()
        stop.set()
        killer.join(10)
        results = [requests_by_result(one.url), requests_by_result(two.url)]

    assert sum(killed) > 0, "no connection was killed during the burst"
    assert delivery.delivered == len(events)
    assert sum(r.get("accepted", 0) + r.get("duplicate", 0) for r in results) == len(events)
    state = redis_state(redis_url, redis_prefix)
    assert total(state, "billingwatch_events_total") == len(events)
    assert state == reference(events)
