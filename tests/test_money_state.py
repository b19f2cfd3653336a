"""Issue 22 item 4: state that holds money never expires (store layout 2, docs/redis.md).

A subscription held in the gauges and its customer's MRR have no TTL, in both stores; an ended
subscription (and a customer left without MRR) may expire."""

import time
import uuid
from typing import Any

import pytest
import redis

from billingwatch.detectors import build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.recorder import Recorder
from billingwatch.store import MemoryStore, RedisStore, Store
from testkit.processes import RedisServer
from tests.metrics import gauge_value
from tests.recording import DEDUP_TTL, SUBSCRIPTION_TTL, figures

pytestmark = pytest.mark.anyio

DAY = 86400
YEAR_PLAN_3 = {"interval": "year", "interval_count": 3}  # billed every 3 years: no event in between
UNIT_3Y = 3600000  # $36,000 every 3 years: MRR $1,000


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sub_event(event_type: str, created: int, sub: str, customer: str) -> dict[str, Any]:
    obj = se.subscription(subscription_id=sub, customer=customer, unit_amount=UNIT_3Y, created=created,
                          period_start=created, period_end=created + 1095 * DAY,
                          status="canceled" if event_type.endswith(".deleted") else "active", **YEAR_PLAN_3)
    return se.event(event_type, obj, created=created)


async def record(store: Store, clock: Clock, evt: dict[str, Any]) -> None:
    recorder = Recorder(store, build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL, clock)
    await recorder.record(evt)


async def mrr(store: Store, clock: Clock) -> float:
    return gauge_value(await figures(store, clock.now), "billingwatch_mrr_amount", currency="usd", livemode="false")


async def test_a_three_year_plan_keeps_its_mrr_through_the_renewal_in_process() -> None:
    """The issue's scenario: MRR 1,000 stays 1,000 at the day-1095 renewal and is 0 after deletion
    (before: 2,000 at the renewal, 1,000 left after the deletion: the 400-day TTL had dropped it)."""
    clock = Clock(time.time())
    store = MemoryStore(clock=clock)
    start = int(clock.now)
    await record(store, clock, sub_event("customer.subscription.created", start, "sub_3y", "cus_3y"))
    assert await mrr(store, clock) == 1000
    clock.now += 1095 * DAY
    renewal = int(clock.now)
    await record(store, clock, sub_event("customer.subscription.updated", renewal, "sub_3y", "cus_3y"))
    assert await mrr(store, clock) == 1000
    assert gauge_value(await figures(store, clock.now), "billingwatch_subscriptions",
                       status="active", livemode="false") == 1
    clock.now += 10 * DAY
    await record(store, clock, sub_event("customer.subscription.deleted", int(clock.now), "sub_3y", "cus_3y"))
    assert await mrr(store, clock) == 0
    assert gauge_value(await figures(store, clock.now), "billingwatch_subscriptions",
                       status="active", livemode="false") == 0


async def test_an_ended_subscription_may_expire_in_process() -> None:
    clock = Clock(time.time())
    store = MemoryStore(clock=clock)
    await record(store, clock, sub_event("customer.subscription.created", int(clock.now), "sub_e", "cus_e"))
    clock.now += DAY
    await record(store, clock, sub_event("customer.subscription.deleted", int(clock.now), "sub_e", "cus_e"))
    clock.now += DEDUP_TTL + 1
    # Its snapshot is forgotten: an old snapshot arriving now counts anew (what expiry means).
    assert not store._alive("s:false:sub_e")
    # Its customer, left without MRR, is remembered (as having paid: reactivation) for the subscription memory.
    assert store._alive("u:false:cus_e")
    clock.now += SUBSCRIPTION_TTL
    assert not store._alive("u:false:cus_e")


def ttl(client: "redis.Redis[bytes]", key: str) -> int:
    return int(client.ttl(key))


async def test_money_holding_hashes_have_no_ttl_in_redis(redis_server: RedisServer) -> None:
    prefix = "t" + uuid.uuid4().hex[:12]
    store = RedisStore(redis_server.url, prefix=prefix)
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    clock = Clock(time.time())
    sub_key, customer_key = f"{{{prefix}}}:s:false:sub_r", f"{{{prefix}}}:cu:false:cus_r"
    try:
        await record(store, clock, sub_event("customer.subscription.created", int(clock.now), "sub_r", "cus_r"))
        assert (ttl(client, sub_key), ttl(client, customer_key)) == (-1, -1)  # exists, no TTL
        # A payment of the subscription (invoice.paid) keeps it without a TTL too.
        invoice = se.invoice(subscription="sub_r", customer="cus_r", total=UNIT_3Y, created=int(clock.now) + 5)
        await record(store, clock, se.event("invoice.paid", invoice, created=int(clock.now) + 5))
        assert client.hget(sub_key, "paid") is not None
        assert ttl(client, sub_key) == -1
        # A key an 886d805 replica gave a TTL during a rolling update loses it at this release's next write.
        client.expire(sub_key, SUBSCRIPTION_TTL)
        client.expire(customer_key, SUBSCRIPTION_TTL)
        await record(store, clock, sub_event("customer.subscription.updated", int(clock.now) + 10, "sub_r", "cus_r"))
        assert (ttl(client, sub_key), ttl(client, customer_key)) == (-1, -1)
        await record(store, clock, sub_event("customer.subscription.deleted", int(clock.now) + 20, "sub_r", "cus_r"))
        # Ended: kept as long as an older snapshot may still arrive (the dedup retention), then gone.
        assert 0 < ttl(client, sub_key) <= DEDUP_TTL
        assert 0 < ttl(client, customer_key) <= SUBSCRIPTION_TTL
        assert await mrr(store, clock) == 0
    finally:
        client.close()
        await store.close()
