"""Issue 22 item 2: a Redis that may evict keys (any maxmemory-policy but noeviction) loses dedup
keys, so redelivered events count twice, silently. The exporter refuses to start on one (a
one-line error naming the setting), /ready refuses it at run time, BILLINGWATCH_REDIS_ALLOW_EVICTION=1
turns the refusal into a warning, and billingwatch_store_evicted_keys shows what Redis dropped.
Where CONFIG GET is not allowed (an ACL user without +config, as managed Redis often has),
INFO memory tells the policy; where neither is allowed, the log says so plainly.

Real redis-server processes with maxmemory and the policy on their command line.
"""

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from billingwatch.config import ConfigError, Settings
from billingwatch.detectors import build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.recorder import Recorder
from billingwatch.store import Outcome, RedisStore
from billingwatch.store.redis_startup import refuse_evicting_redis
from testkit.processes import Exporter, RedisClusterServers, RedisSentinel, RedisServer, free_port
from tests.conftest import ROOT, SECRET
from tests.metrics import scrape, value
from tests.recording import DEDUP_TTL, SUBSCRIPTION_TTL

CHARGES = 20_000
REDELIVERED = 200


def redis_server(*extra: str) -> Iterator[RedisServer]:
    with RedisServer(extra=extra) as server:
        yield server


@pytest.fixture
def lru_redis() -> Iterator[RedisServer]:
    yield from redis_server("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")


def exporter_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    env.update(STRIPE_WEBHOOK_SECRET=SECRET, PYTHONPATH=str(ROOT), **overrides)
    return env


def fill_and_redeliver(url: str, prefix: str) -> int:
    """20,000 charges recorded live, then the first 200 again: how many of those counted again."""
    async def run() -> int:
        store = RedisStore(url, prefix)
        recorder = Recorder(store, build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL)
        now = int(time.time())
        events = [se.event("charge.succeeded", se.charge(charge_id=f"ch_ev{i}", customer=f"cus_ev{i}"),
                           event_id=f"evt_ev{i:05d}", created=now) for i in range(CHARGES)]
        try:
            for start in range(0, CHARGES, 500):
                results = await recorder.record_many(events[start:start + 500], history=False)
                assert all(isinstance(r, Outcome) and not r.duplicate for r in results)
            again = await recorder.record_many(events[:REDELIVERED], history=False)
        finally:
            await store.close()
        return sum(1 for r in again if isinstance(r, Outcome) and not r.duplicate)

    return asyncio.run(run())


def test_an_evicting_redis_is_refused_at_start_up_and_allowed_only_with_the_setting(
        lru_redis: RedisServer, redis_prefix: str) -> None:
    counted_again = fill_and_redeliver(lru_redis.url, redis_prefix)
    evicted = int(lru_redis.info("stats")["evicted_keys"])
    assert evicted > 0 and counted_again > 0  # the hazard itself: Redis dropped dedup keys

    port = free_port()
    refused = subprocess.run([sys.executable, "-m", "billingwatch", "serve", "--port", str(port)],
                             env=exporter_env(REDIS_URL=lru_redis.url, BILLINGWATCH_REDIS_PREFIX=redis_prefix),
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("billingwatch: ")]
    assert len(errors) == 1, refused.stderr
    assert "maxmemory-policy is allkeys-lru" in errors[0] and "BILLINGWATCH_REDIS_ALLOW_EVICTION=1" in errors[0]
    assert "Traceback" not in refused.stderr

    exporter = Exporter(exporter_env(REDIS_URL=lru_redis.url, BILLINGWATCH_REDIS_PREFIX=redis_prefix,
                                     BILLINGWATCH_REDIS_ALLOW_EVICTION="1"), free_port())
    exporter.start()
    process = exporter.process
    assert process is not None and process.stderr is not None
    try:
        assert httpx.get(exporter.url + "/ready", timeout=10).status_code == 200
        figures = scrape(exporter.url)
        assert value(figures, "billingwatch_store_evicted_keys") >= evicted
        assert value(figures, "billingwatch_store_max_memory_bytes") == 4 * 1024 * 1024
        assert value(figures, "billingwatch_store_used_memory_bytes") > 0
    finally:
        exporter.stop()
    warnings = [line for line in process.stderr.read().decode().splitlines() if "allkeys-lru" in line]
    # Once from the start-up check, once from the serving store's first /ready: never per probe.
    assert 1 <= len(warnings) <= 2 and all("WARNING" in w and "running anyway" in w for w in warnings), warnings


@pytest.fixture
def noeviction_redis() -> Iterator[RedisServer]:
    yield from redis_server("--maxmemory", "64mb", "--maxmemory-policy", "noeviction")


def test_ready_refuses_a_policy_changed_at_run_time(noeviction_redis: RedisServer, redis_prefix: str,
                                                    make_client: Any) -> None:
    client = make_client(store=RedisStore(noeviction_redis.url, redis_prefix))
    assert client.get("/ready").status_code == 200
    admin = redis.Redis(port=noeviction_redis.port)
    try:
        admin.config_set("maxmemory-policy", "volatile-lru")  # every BillingWatch key has a TTL: all evictable
        answer = client.get("/ready")
        assert answer.status_code == 503
        assert "maxmemory-policy is volatile-lru" in answer.json()["reason"]
        admin.config_set("maxmemory-policy", "noeviction")
        assert client.get("/ready").status_code == 200
    finally:
        admin.close()


def acl_redis(*rules: str) -> Iterator[RedisServer]:
    """A Redis on allkeys-lru whose user bw (password pw) has `rules` beyond +@all."""
    yield from redis_server("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru",
                            "--user", "bw", "on", ">pw", "~*", "&*", "+@all", *rules)


def acl_url(server: RedisServer) -> str:
    return f"redis://bw:pw@127.0.0.1:{server.port}/0"


@pytest.fixture
def no_config_redis() -> Iterator[RedisServer]:
    yield from acl_redis("-config")


@pytest.fixture
def no_config_no_info_redis() -> Iterator[RedisServer]:
    yield from acl_redis("-config", "-info")


def test_without_config_get_the_policy_is_read_from_info(no_config_redis: RedisServer, redis_prefix: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    url = acl_url(no_config_redis)
    with redis.Redis.from_url(url) as client, pytest.raises(redis.exceptions.NoPermissionError):
        client.config_get("maxmemory-policy")  # the ACL really denies it
    with caplog.at_level(logging.WARNING, logger="billingwatch"), pytest.raises(ConfigError) as refused:
        refuse_evicting_redis(Settings(redis_url=url, redis_prefix=redis_prefix))
    assert "maxmemory-policy is allkeys-lru" in str(refused.value) and "\n" not in str(refused.value)
    notes = [r.getMessage() for r in caplog.records]
    assert any("CONFIG GET maxmemory-policy is refused (NoPermissionError" in n and "from INFO memory" in n
               for n in notes), notes


def test_without_config_get_and_info_the_log_says_what_was_not_checked(
        no_config_no_info_redis: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture,
        make_client: Any) -> None:
    url = acl_url(no_config_no_info_redis)
    with caplog.at_level(logging.WARNING, logger="billingwatch"):
        refuse_evicting_redis(Settings(redis_url=url, redis_prefix=redis_prefix))  # starts: nothing to go on
    notes = [r.getMessage() for r in caplog.records]
    assert any("could not be checked" in n and "INFO memory" in n for n in notes), notes
    client = make_client(store=RedisStore(url, redis_prefix))
    assert client.get("/ready").status_code == 200  # events can be recorded; the log has said what is unknown
    figures = scrape(client)
    assert "billingwatch_store_used_memory_bytes" in figures.families
    assert not [k for k in figures if k[0] == "billingwatch_store_used_memory_bytes"]  # no INFO, no figure


def test_a_cluster_is_checked_on_the_node_that_holds_the_store(redis_prefix: str) -> None:
    cluster = RedisClusterServers()
    cluster.start()

    async def ready() -> tuple[str | None, Any]:
        store = RedisStore(cluster.url(cluster.ports[0]), redis_prefix)
        try:
            return await store.can_record(), (await store.snapshot(time.time(), 0)).memory
        finally:
            await store.close()

    try:
        owner = cluster.owner(int(cluster.cli(cluster.ports[0], "cluster", "keyslot", "{" + redis_prefix + "}")))
        others = [p for p in cluster.ports if p != owner]
        for port in others:  # nodes the store never writes to do not matter
            cluster.cli(port, "config", "set", "maxmemory-policy", "allkeys-lru")
        reason, memory = asyncio.run(ready())
        assert reason is None and memory is not None and memory.used_bytes > 0
        cluster.cli(owner, "config", "set", "maxmemory-policy", "allkeys-random")
        cluster.cli(owner, "config", "set", "maxmemory", "100mb")
        reason, memory = asyncio.run(ready())
        assert reason is not None and "maxmemory-policy is allkeys-random" in reason
        assert memory is not None and memory.max_bytes == 100 * 1024 * 1024
    finally:
        cluster.close()


def test_through_sentinel_the_master_is_checked(tmp_path: Path, redis_prefix: str) -> None:
    master = RedisServer(extra=("--maxmemory", "8mb", "--maxmemory-policy", "volatile-lru"))
    master.start()
    sentinel = RedisSentinel(tmp_path, master.port, quorum=1)
    try:
        sentinel.start()
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
        with pytest.raises(ConfigError) as refused:
            refuse_evicting_redis(Settings(redis_url=url, redis_prefix=redis_prefix))
        assert "maxmemory-policy is volatile-lru" in str(refused.value)

        async def memory() -> Any:
            store = RedisStore(url, redis_prefix)
            try:
                return (await store.snapshot(time.time(), 0)).memory
            finally:
                await store.close()

        found = asyncio.run(memory())
        assert found is not None and found.max_bytes == 8 * 1024 * 1024
    finally:
        sentinel.stop()
        master.close()
