"""Redis Sentinel and WAIT, with real redis-server replicas, real redis-sentinel processes and real
`billingwatch serve` processes on loopback.

A failover loses what the dead master had not yet copied to a replica; with
BILLINGWATCH_REDIS_WAIT_REPLICAS the exporter answers 2xx only once replicas hold the event,
so no acknowledged event is lost, and Stripe's retries of the 503s are deduplicated.
"""

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billingwatch.config import ConfigError, from_env
from billingwatch.fixtures import stripe_events as se
from billingwatch.store import RedisStore, StoreUnavailable
from billingwatch.store.redis_connect import SentinelURL, parse_sentinel_url
from testkit.processes import RedisSentinel, RedisServer, wait_until
from tests.conftest import SECRET, running_exporter
from tests.metrics import TIMING, Figures, of_account, scrape, total
from tests.recording import record
from tests.test_faults import Delivery, comparable, mixed_events, reference, requests_by_result

WAIT = {"BILLINGWATCH_REDIS_WAIT_REPLICAS": "1", "BILLINGWATCH_REDIS_WAIT_TIMEOUT_MS": "300"}


def store_figures(figures: Figures) -> Figures:
    """The figures the events determine, without per-process and timing families."""
    return {k: v for k, v in comparable(figures).items() if not k[0].startswith(TIMING)}


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[tuple[RedisServer, list[RedisServer], list[RedisSentinel]]]:
    """A master, two replicas and three Sentinels (quorum 2). Two replicas: after a failover the new
    master still has one to confirm WAIT 1 while the old master is down."""
    master = RedisServer(tmp_path / "master")
    replicas = [RedisServer(tmp_path / f"replica{i}", replica_of=master.port) for i in range(2)]
    sentinels: list[RedisSentinel] = []
    try:
        for server in (master, *replicas):
            server.directory.mkdir()
            server.start()
        wait_until(lambda: master.replicas_online() == 2, what="both replicas in sync")
        sentinels = [RedisSentinel(tmp_path, master.port) for _ in range(3)]
        for sentinel in sentinels:
            sentinel.start()
        # A failover needs Sentinels that know each other (a majority authorises it) and the replicas.
        wait_until(lambda: all(s.master()["num-other-sentinels"] == "2" and s.master()["num-slaves"] == "2"
                               for s in sentinels), timeout=20, what="Sentinels discovering each other")
        yield master, replicas, sentinels
    finally:
        for process in (*sentinels, master, *replicas):
            process.stop()


def sentinel_url(sentinels: list[RedisSentinel]) -> str:
    return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in sentinels) + "/mymaster/0"


def test_master_sigkilled_mid_load_every_acknowledged_event_counted_once(
    sentinel_group: tuple[RedisServer, list[RedisServer], list[RedisSentinel]], redis_prefix: str,
) -> None:
    master, replicas, sentinels = sentinel_group
    events = mixed_events(300)
    env = {"REDIS_URL": sentinel_url(sentinels), "BILLINGWATCH_REDIS_PREFIX": redis_prefix, **WAIT}
    with running_exporter(**env) as exporter:
        delivery = Delivery([exporter.url] * 4, events, deadline=45)
        delivery.start()
        delivery.wait_delivered(80)
        master.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        delivery.join()
        results = requests_by_result(exporter.url)
        state = store_figures(of_account(scrape(exporter.url)))  # labelled as the reference

    # Each Sentinel learns the new master from the one that led the failover, within seconds.
    ports = {str(r.port) for r in replicas}
    wait_until(lambda: all(s.master()["port"] in ports for s in sentinels), what="every Sentinel naming a replica")
    answered = [a for a in delivery.attempts if a.started > killed_at]
    assert any(a.status in (0, 503) for a in answered), "no attempt met the failover"
    assert any(200 <= a.status < 300 for a in answered), "nothing was acknowledged after the failover"
    assert results["store_unavailable"] > 0
    # Every event acknowledged (before or after the failover) is in the new master, once.
    assert delivery.delivered == len(events)
    assert total(state, "billingwatch_events_total") == len(events)
    assert state == store_figures(reference(events))


def post(url: str, event: dict[str, object]) -> httpx.Response:
    body = se.body(event)
    return httpx.post(url + "/webhooks/stripe", content=body, headers=se.signed_headers(body, SECRET), timeout=10)


def post_until_answered(url: str, event: dict[str, object]) -> tuple[httpx.Response, int]:
    """Retry 503s as Stripe does (bounded): the answer, and how many 503s came first."""
    deadline, refused = time.monotonic() + 15, 0
    while (response := post(url, event)).status_code == 503 and time.monotonic() < deadline:
        refused += 1
        time.sleep(0.1)
    return response, refused


def test_wait_without_a_replica_answers_503_and_the_retry_counts_once(tmp_path: Path, redis_prefix: str) -> None:
    master = RedisServer(tmp_path / "master")
    replica = RedisServer(tmp_path / "replica", replica_of=master.port)
    try:
        for server in (master, replica):
            server.directory.mkdir()
            server.start()
        wait_until(lambda: master.replicas_online() == 1, what="the replica in sync")
        first, second = mixed_events(2)
        with running_exporter(REDIS_URL=master.url, BILLINGWATCH_REDIS_PREFIX=redis_prefix, **WAIT) as exporter:
            accepted, refused_first = post_until_answered(exporter.url, first)  # a loaded machine may be slow
            assert accepted.status_code == 200
            assert httpx.get(exporter.url + "/ready", timeout=10).status_code == 200
            replica.stop()
            wait_until(lambda: master.replicas_online() == 0, what="the master noticing its replica gone")
            refused = post(exporter.url, second)
            assert (refused.status_code, refused.json()) == (503, {"error": "store unavailable; retry later"})
            # /ready tells the truth: a load balancer stops sending deliveries this replica cannot confirm.
            ready = httpx.get(exporter.url + "/ready", timeout=10)
            assert ready.status_code == 503 and "0 of the 1 Redis replicas" in ready.json()["reason"]

            replica.start()
            wait_until(lambda: master.replicas_online() == 1, what="the replica back in sync")
            retried, refused_again = post_until_answered(exporter.url, second)  # 503 until it catches up
            assert retried.status_code == 200
            results = requests_by_result(exporter.url)
            state = store_figures(of_account(scrape(exporter.url)))  # labelled as the reference
    finally:
        master.stop()
        replica.stop()

    assert results["store_unavailable"] == refused_first + 1 + refused_again
    # The refused attempt ran the script on the master: the retry finds it recorded and adds nothing.
    assert retried.json()["duplicate"] is True
    assert total(state, "billingwatch_events_total") == 2
    assert state == store_figures(reference([first, second]))


def test_a_redelivery_on_another_connection_waits_for_the_earlier_write(tmp_path: Path, redis_prefix: str) -> None:
    """A redelivery finds the event recorded (a duplicate, which writes nothing) but is acknowledged
    only once a replica holds the event: not while the replica, frozen here with SIGSTOP (still
    connected), has not received it, even from a new connection that never wrote."""
    master = RedisServer(tmp_path / "master")
    replica = RedisServer(tmp_path / "replica", replica_of=master.port)
    event = mixed_events(1)[0]

    async def attempt() -> str:
        """One delivery through a new store (new connections): what the webhook would answer."""
        store = RedisStore(master.url, redis_prefix, wait_replicas=1, wait_timeout_ms=200)
        try:
            return "duplicate" if (await record(store, event)).duplicate else "accepted"
        except StoreUnavailable:
            return "503"
        finally:
            await store.close()

    try:
        for server in (master, replica):
            server.directory.mkdir()
            server.start()
        wait_until(lambda: master.replicas_online() == 1, what="the replica in sync")
        assert replica.process is not None
        replica.process.send_signal(signal.SIGSTOP)
        try:
            assert asyncio.run(attempt()) == "503"  # recorded on the master, not confirmed
            assert asyncio.run(attempt()) == "503"  # the redelivery: a duplicate, still not confirmed
        finally:
            replica.process.send_signal(signal.SIGCONT)
        # Once the replica catches up, a retry is acknowledged (a duplicate: counted once).
        wait_until(lambda: asyncio.run(attempt()) == "duplicate", what="a retry acknowledged")
    finally:
        master.stop()
        replica.stop()


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("redis+sentinel://h1,h2:26380,[::1]:26381/mymaster",
         SentinelURL((("h1", 26379), ("h2", 26380), ("::1", 26381)), "mymaster")),
        ("redis+sentinel://:p%40ss@h1:26379/mymaster/3?sentinel_password=s3",
         SentinelURL((("h1", 26379),), "mymaster", db=3, password="p@ss", sentinel_password="s3")),
        ("redis+sentinel://app:pw@h1/mymaster/",
         SentinelURL((("h1", 26379),), "mymaster", username="app", password="pw")),
    ],
)
def test_sentinel_url_forms(url: str, parsed: SentinelURL) -> None:
    assert parse_sentinel_url(url) == parsed


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_URL": "redis+sentinel://:hunter2@h1:26379"}, "master_name"),
        ({"REDIS_URL": "redis+sentinel://:hunter2@h1:port/mymaster"}, "host:port"),
        ({"REDIS_URL": "redis+sentinel://:hunter2@h1/mymaster/zero"}, "database"),
        ({"REDIS_URL": "redis+sentinel://:hunter2@h1/mymaster?ssl=1"}, "only the option sentinel_password"),
        ({"BILLINGWATCH_REDIS_WAIT_REPLICAS": "1"}, "needs REDIS_URL"),
        ({"REDIS_URL": "redis+cluster://r:1", "BILLINGWATCH_REDIS_WAIT_REPLICAS": "1"}, "not supported with a Redis"),
        ({"REDIS_URL": "redis://r:6379/0", "BILLINGWATCH_REDIS_WAIT_REPLICAS": "-1"}, "at least 0"),
        ({"REDIS_URL": "redis://r:6379/0", "BILLINGWATCH_REDIS_WAIT_TIMEOUT_MS": "5000"}, "at most 1500"),
        ({"REDIS_URL": "redis://r:6379/0", "BILLINGWATCH_REDIS_WAIT_TIMEOUT_MS": "0"}, "at least 1"),
    ],
)
def test_bad_redis_settings_fail_at_start_up_without_the_password(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        from_env(env)
    assert "hunter2" not in str(raised.value)


def test_wait_settings_reach_the_store() -> None:
    settings = from_env({"REDIS_URL": "redis+sentinel://h1/mymaster", **WAIT})
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == (1, 300)
    assert from_env({}).redis_wait_replicas == 0  # off by default: no replica is assumed
