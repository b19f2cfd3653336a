"""Redis Cluster for real (three masters on loopback), and /ready telling the truth.

Exporters name the cluster through different nodes (one that does not own the store's slot);
a delivery client retries every non-2xx as Stripe does. Counts must end exactly as one clean
delivery of each event, also across a migration of the slot during traffic.
"""

from collections.abc import Iterator

import httpx
import pytest

from billingwatch.fixtures import stripe_events as se
from billingwatch.metrics.fields import feedback_field
from billingwatch.store import RedisStore
from testkit.processes import RedisClusterServers, RedisServer
from tests.conftest import SECRET, running_exporter
from tests.metrics import total
from tests.test_faults import Delivery, mixed_events, redis_state, reference, requests_by_result


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers(masters=3) as servers:
        yield servers


def slot_of(cluster: RedisClusterServers, prefix: str) -> int:
    return int(cluster.cli(cluster.ports[0], "cluster", "keyslot", "{" + prefix + "}"))


def post(url: str) -> httpx.Response:
    body = se.body(se.event("charge.succeeded", se.charge(charge_id=se.new_id("ch"))))
    return httpx.post(url + "/webhooks/stripe", content=body, headers=se.signed_headers(body, SECRET), timeout=10)


def test_ready_503_when_url_names_a_cluster_node_that_does_not_own_the_slot(
        cluster: RedisClusterServers, redis_prefix: str) -> None:
    """The issue's fault: PING succeeds, every script call gets MOVED. /ready must say so."""
    slot = slot_of(cluster, redis_prefix)
    other = next(p for p in cluster.ports if p != cluster.owner(slot))
    plain = {"REDIS_URL": f"redis://127.0.0.1:{other}", "BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    with running_exporter(**plain) as exporter:
        assert post(exporter.url).status_code == 503
        ready = httpx.get(exporter.url + "/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert "MovedError" in ready.json()["reason"] and "redis+cluster://" in ready.json()["reason"]
    # The same node named in cluster mode: ready, and the webhook records.
    clustered = {"REDIS_URL": cluster.url(other), "BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    with running_exporter(**clustered) as exporter:
        for _ in range(3):
            assert httpx.get(exporter.url + "/ready").json() == {"status": "ready", "store": "redis"}
        assert cluster.cli(other, "cluster", "countkeysinslot", str(slot)) == "0", "the probe wrote a key"
        assert post(exporter.url).status_code == 200
        assert cluster.cli(other, "cluster", "countkeysinslot", str(slot)) == "0"  # asked the owner, not this node
        assert int(cluster.cli(cluster.owner(slot), "cluster", "countkeysinslot", str(slot))) > 0


def test_ready_503_when_redis_refuses_scripts(redis_prefix: str) -> None:
    """PING answers but EVALSHA is denied (an ACL without @scripting): not ready, and why."""
    server = RedisServer(extra=("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-@scripting"))
    server.start()
    try:
        with running_exporter(REDIS_URL=server.url, BILLINGWATCH_REDIS_PREFIX=redis_prefix) as exporter:
            assert post(exporter.url).status_code == 503
            ready = httpx.get(exporter.url + "/ready")
            assert ready.status_code == 503
            reason = ready.json()["reason"]
            assert reason.startswith("NoPermissionError: this user has no permissions to run the 'evalsha'")
    finally:
        server.close()


def test_two_replicas_on_different_cluster_nodes_count_each_event_once(
        cluster: RedisClusterServers, redis_prefix: str) -> None:
    slot = slot_of(cluster, redis_prefix)
    owner = cluster.owner(slot)
    other = next(p for p in cluster.ports if p != owner)
    events = mixed_events(1500)
    env = {"BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    with (running_exporter(REDIS_URL=cluster.url(owner), **env) as one,
          running_exporter(REDIS_URL=cluster.url(other), **env) as two):
        # Every event through both replicas: each one's second delivery is a redelivery.
        delivery = Delivery([one.url, two.url], events, deadline=90)
        delivery.start(split=False)
        delivery.join()
        first, second = requests_by_result(one.url), requests_by_result(two.url)

    assert delivery.delivered == 2 * len(events)
    assert first["accepted"] > 0 and second["accepted"] > 0, "both replicas must record events"
    assert first["accepted"] + second["accepted"] == len(events)
    assert first["duplicate"] + second["duplicate"] == len(events)
    state = redis_state(cluster.url(other), redis_prefix)
    expected = reference(events)
    assert total(expected, "billingwatch_anomalies_total") > 0, "the events must include anomalies"
    assert total(state, "billingwatch_anomalies_total") == total(expected, "billingwatch_anomalies_total")
    assert total(state, "billingwatch_events_total") == len(events)
    assert state == expected


def test_slot_migration_during_traffic_counts_exact(cluster: RedisClusterServers, redis_prefix: str) -> None:
    slot = slot_of(cluster, redis_prefix)
    source = cluster.owner(slot)
    target, third = (p for p in cluster.ports if p != source)
    events = mixed_events(900)
    env = {"BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    with (running_exporter(REDIS_URL=cluster.url(source), **env) as one,
          running_exporter(REDIS_URL=cluster.url(third), **env) as two):
        delivery = Delivery([one.url, two.url], events, deadline=90)
        delivery.start(split=False)
        delivery.wait_delivered(300)
        moved = cluster.migrate_slot(slot, source, target, batch=50)
        after = delivery.delivered
        delivery.join()
        first, second = requests_by_result(one.url), requests_by_result(two.url)

    assert moved >= 150, "the slot's keys must have moved while events were being recorded"
    assert after < 2 * len(events), "the migration must end before the traffic does"
    assert cluster.owner(slot) == target
    assert delivery.delivered == 2 * len(events)
    assert first["accepted"] + second["accepted"] == len(events)
    assert first["duplicate"] + second["duplicate"] == len(events)
    state = redis_state(cluster.url(target), redis_prefix)
    expected = reference(events)
    assert total(expected, "billingwatch_anomalies_total") > 0
    assert total(state, "billingwatch_events_total") == len(events)
    assert state == expected


def test_the_layout_migration_runs_on_a_cluster(cluster: RedisClusterServers, redis_prefix: str) -> None:
    """store/layout.py on Redis Cluster: SCAN over the nodes, per-key scripts pipelined to the owner."""
    import asyncio
    import time

    from billingwatch.store import RedisStore
    from tests.recording import record

    async def run() -> tuple[list[str], list[int], bytes | None]:
        store = RedisStore(cluster.url(cluster.ports[0]), prefix=redis_prefix)
        try:
            now = int(time.time()) - 60
            for i in range(3):
                obj = se.subscription(subscription_id=f"sub_{i}", customer=f"cus_{i}", created=now)
                await record(store, se.event("customer.subscription.created", obj, created=now))
            # A store as the release at 886d805 leaves it: no version, a TTL on every subscription hash.
            client = store._redis
            await client.delete(store.layout_key)
            for i in range(3):
                await client.expire(store.key(f"s:false:sub_{i}"), 86400)
            lines = (await store.migration().run()).lines()
            ttls = [await client.ttl(store.key(f"s:false:sub_{i}")) for i in range(3)]
            return lines, ttls, await client.get(store.layout_key)
        finally:
            await store.close()

    lines, ttls, version = asyncio.run(run())
    assert "  persist: 3 keys (did: subscription and customer hashes holding money kept without a TTL)" in lines
    assert ttls == [-1, -1, -1] and version == b"2"


@pytest.mark.anyio
async def test_a_verdict_and_its_counter_on_a_cluster_node_that_does_not_own_the_slot(
        cluster: RedisClusterServers, redis_prefix: str) -> None:
    other = next(p for p in cluster.ports if p != cluster.owner(slot_of(cluster, redis_prefix)))
    store = RedisStore(cluster.url(other), prefix=redis_prefix)
    try:
        counter = feedback_field("duplicate_charge", "false_positive")
        assert await store.set_verdict("duplicate_charge-00000000000000aa", "false_positive", 1, counter) is None
        assert (await store.snapshot(0, 0)).counters[counter] == 1
        assert await store.verdicts(["duplicate_charge-00000000000000aa"]) == {
            "duplicate_charge-00000000000000aa": {"verdict": "false_positive", "at": 1}}
    finally:
        await store.close()
