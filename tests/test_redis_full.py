"""Issue 22 item 3: a Redis that refuses BillingWatch's writes (full under noeviction, a read-only
replica) makes the webhook answer 503 (nothing half-written) and, until a write goes through
again, /ready answer 503 with the reason and billingwatch_store_up read 0, so
BillingWatchStoreDown fires. Freeing the space (or promoting the node) recovers both, and the
refused event is then recorded once.

Real redis-server processes, maxmemory and policy on their command line.
"""

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from billingwatch.fixtures import stripe_events as se
from billingwatch.store import RedisStore
from testkit.processes import RedisServer, wait_until
from tests.conftest import SECRET
from tests.metrics import scrape, value

URL = "/webhooks/stripe"


def post(client: TestClient, evt: dict[str, Any]) -> Any:
    payload = se.body(evt)
    return client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET))


def charges(client: TestClient) -> float:
    return value(scrape(client), "billingwatch_charges_total", status="succeeded", currency="usd", livemode="false")


def started(*extra: str) -> Iterator[RedisServer]:
    with RedisServer(extra=extra) as server:
        yield server


@pytest.fixture
def small_redis() -> Iterator[RedisServer]:
    yield from started("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")


def fill_up(port: int) -> None:
    """Other data takes nearly all of maxmemory (within a few KB)."""
    with redis.Redis(port=port) as admin, pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(100_000):
            admin.set(f"other:{i}", b"x" * 2048)


def post_until_refused(client: TestClient, tag: str) -> tuple[dict[str, Any], int]:
    """Charges until Redis is full (as in production: the events fill it): the refused one, and
    how many were accepted before it."""
    for i in range(1000):
        evt = se.event("charge.succeeded", se.charge(charge_id=f"ch_{tag}_{i}", customer=f"cus_{tag}_{i}"))
        answer = post(client, evt)
        if answer.status_code == 503:
            return evt, i
        assert answer.status_code == 200, answer.text
    raise AssertionError("Redis never refused a write")


def test_a_full_redis_is_not_ready_and_store_down_until_space_is_freed(
        small_redis: RedisServer, redis_prefix: str, make_client: Any) -> None:
    client = make_client(store=RedisStore(small_redis.url, redis_prefix))
    first = se.event("charge.succeeded", se.charge(charge_id="ch_full_1", customer="cus_full"))
    assert post(client, first).status_code == 200
    assert client.get("/ready").status_code == 200
    assert value(scrape(client), "billingwatch_store_up") == 1

    fill_up(small_redis.port)
    refused, accepted = post_until_refused(client, "full")
    figures = scrape(client)
    assert value(figures, "billingwatch_store_up") == 0  # BillingWatchStoreDown's signal
    assert value(figures, "billingwatch_charges_total", status="succeeded", currency="usd",
                 livemode="false") == 1 + accepted  # nothing half-written
    # What BillingWatchStoreNearlyFull reads (used_memory hovers at the limit: buffers come and go).
    used, limit = (value(figures, f"billingwatch_store_{n}_memory_bytes") for n in ("used", "max"))
    assert limit == 3 * 1024 * 1024 and used > 0.95 * limit
    for _ in range(2):  # stays so while Redis stays full
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["reason"] == ("store not writable: OutOfMemoryError: command not allowed when used "
                                          "memory > 'maxmemory'.")
    assert post(client, refused).status_code == 503  # Stripe's retry meets the same wall

    with redis.Redis(port=small_redis.port) as admin:
        admin.config_set("maxmemory", "64mb")
    assert client.get("/ready").status_code == 200
    assert value(scrape(client), "billingwatch_store_up") == 1
    retried = post(client, refused)
    assert retried.status_code == 200 and retried.json()["duplicate"] is False
    assert post(client, refused).json()["duplicate"] is True
    assert charges(client) == 2 + accepted


def test_a_refused_webhook_alone_closes_the_gate_and_the_next_write_opens_it(
        small_redis: RedisServer, redis_prefix: str, make_client: Any) -> None:
    """No /ready poll in between: the refused write itself sets store_up 0; a write that goes
    through (the next delivery) sets it back."""
    client = make_client(store=RedisStore(small_redis.url, redis_prefix))
    fill_up(small_redis.port)
    evt, accepted = post_until_refused(client, "gate")
    assert value(scrape(client), "billingwatch_store_up") == 0
    with redis.Redis(port=small_redis.port) as admin:
        admin.config_set("maxmemory", "0")  # no limit
    assert post(client, evt).status_code == 200
    assert value(scrape(client), "billingwatch_store_up") == 1
    assert charges(client) == 1 + accepted


@pytest.fixture
def two_redis() -> Iterator[tuple[RedisServer, RedisServer]]:
    first, second = RedisServer(), RedisServer()
    first.start()
    second.start()
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def test_a_read_only_replica_is_not_ready_until_promoted(
        two_redis: tuple[RedisServer, RedisServer], redis_prefix: str, make_client: Any) -> None:
    node, master = two_redis
    client = make_client(store=RedisStore(node.url, redis_prefix))
    assert client.get("/ready").status_code == 200
    with redis.Redis(port=node.port) as admin:
        admin.execute_command("REPLICAOF", "127.0.0.1", str(master.port))  # as a failover leaves an old master
        wait_until(lambda: master.replicas_online() == 1, what="the node in sync as a replica")
        evt = se.event("charge.succeeded", se.charge(charge_id="ch_ro", customer="cus_ro"))
        assert post(client, evt).status_code == 503
        assert value(scrape(client), "billingwatch_store_up") == 0
        ready = client.get("/ready")
        assert ready.status_code == 503 and "ReadOnlyError" in ready.json()["reason"], ready.text
        admin.execute_command("REPLICAOF", "NO", "ONE")
    assert client.get("/ready").status_code == 200
    assert value(scrape(client), "billingwatch_store_up") == 1
    assert post(client, evt).status_code == 200
    assert charges(client) == 1
