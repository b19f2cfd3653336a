"""Issue 23 item c: BILLINGWATCH_REDIS_PREFIX becomes the hash tag {prefix} that keeps every key of
an event in one Redis Cluster slot. An empty one ({} tags nothing) or one with braces is refused
at start-up with one line; and the readiness probe makes the same multi-key call an event does,
so keys that span slots (CROSSSLOT) show in /ready instead of only in 503s.
"""

import asyncio
import subprocess
import sys
import time

import pytest

from billingwatch.config import ConfigError, from_env
from billingwatch.fixtures import stripe_events as se
from billingwatch.store import RedisStore, StoreUnavailable
from testkit.processes import RedisClusterServers, free_port
from tests.recording import record
from tests.test_redis_eviction import exporter_env


@pytest.mark.parametrize("prefix", ["", "{billing}", "bill{", "ing}"])
def test_an_empty_or_braced_prefix_is_refused_at_start_up(prefix: str) -> None:
    with pytest.raises(ConfigError) as refused:
        from_env({"STRIPE_WEBHOOK_SECRET": "whsec_x", "REDIS_URL": "redis://127.0.0.1:1/0",
                  "BILLINGWATCH_REDIS_PREFIX": prefix})
    assert str(refused.value).startswith("BILLINGWATCH_REDIS_PREFIX must be non-empty and hold no braces")
    with pytest.raises(ValueError):
        RedisStore("redis://127.0.0.1:1/0", prefix)
    assert from_env({"BILLINGWATCH_REDIS_PREFIX": "billing.prod"}).redis_prefix == "billing.prod"


def test_serve_with_an_empty_prefix_stops_with_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "billingwatch", "serve", "--port", str(free_port())],
                          env=exporter_env(REDIS_URL="redis+cluster://127.0.0.1:1", BILLINGWATCH_REDIS_PREFIX=""),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert "BILLINGWATCH_REDIS_PREFIX must be non-empty" in lines[-1] and "Traceback" not in done.stderr


class Untagged(RedisStore):
    """Keys without the hash tag, as an empty prefix gave them: an event's keys span slots."""

    def key(self, name: str) -> str:
        return f"untagged:{name}"


def test_the_readiness_probe_meets_the_crossslot_an_event_meets(redis_prefix: str) -> None:
    cluster = RedisClusterServers()
    cluster.start()

    async def check(store: RedisStore) -> tuple[str | None, BaseException | None]:
        try:
            reason = await store.can_record()
            try:
                await record(store, se.event("charge.succeeded", se.charge(), created=int(time.time())))
            except StoreUnavailable as exc:
                return reason, exc
            return reason, None
        finally:
            await store.close()

    try:
        url = cluster.url(cluster.ports[0])
        reason, failure = asyncio.run(check(Untagged(url, redis_prefix)))
        assert isinstance(failure, StoreUnavailable)  # every webhook would be 503...
        assert reason is not None and "same slot" in reason, reason  # ...and /ready says so (CROSSSLOT)
        assert asyncio.run(check(RedisStore(url, redis_prefix))) == (None, None)
    finally:
        cluster.close()
