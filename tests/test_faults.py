"""Faults under load, with real redis-server and real `billingwatch serve` processes.

A delivery client retries every non-2xx answer (and every connection error), as Stripe does.
Whatever breaks in the middle, the store must end exactly as if each event had been
delivered once: nothing lost, nothing counted twice, anomalies not doubled.
"""

import asyncio
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from billingwatch.fixtures import stripe_events as se
from billingwatch.store import MemoryStore, RedisStore
from testkit.processes import RedisServer, wait_until
from tests.conftest import SECRET, running_exporter
from tests.metrics import Figures, scrape, total
from tests.recording import figures, record

# Fields that depend on arrival time (delivery-lag buckets and sum, last-received time) differ
# between a delivery with retries and the reference; everything else must match exactly.
# When an event arrived, not what it says: differs between two deliveries of the same events.
ARRIVAL_DEPENDENT = ("billingwatch_webhook_delivery_lag_seconds_bucket",
                     "billingwatch_webhook_delivery_lag_seconds_sum",
                     "billingwatch_last_event_received_timestamp_seconds")


def mixed_events(count: int) -> list[dict[str, Any]]:
    """Charges (with some same-amount repeats that are duplicate_charge anomalies), payment
    intents, subscription changes and paid invoices: every store path, with known anomalies."""
    now = int(time.time())
    events: list[dict[str, Any]] = []
    for i in range(count):
        customer = f"cus_fault{i % 37}"
        kind = i % 6
        if kind in (0, 1):  # two charges of one customer, same amount, 30 s apart: one anomaly
            obj = se.charge(customer=f"cus_pair{i // 6}", amount=1000 + i // 6, charge_id=se.new_id("ch"))
            events.append(se.event("charge.succeeded", obj, created=now - 600 + 30 * kind))
        elif kind == 2:
            charge_id = se.new_id("ch")
            events.append(se.event("payment_intent.succeeded",
                                   se.payment_intent(charge_id=charge_id, customer=customer, amount=700 + i)))
        elif kind == 3:
            events.append(se.event("customer.subscription.updated",
                                   se.subscription(customer=customer, subscription_id=f"sub_fault{i}",
                                                   unit_amount=100 + i), created=now - i))
        elif kind == 4:
            events.append(se.event("invoice.paid", se.invoice(customer=customer, subscription=f"sub_fault{i - 1}",
                                                              total=300 + i)))
        else:
            events.append(se.event("charge.failed", se.charge(status="failed", customer=customer,
                                                              reason="insufficient_funds")))
    return events


def comparable(samples: Figures) -> Figures:
    """The figures the events determine; a series at 0 and no series mean the same here."""
    return {k: v for k, v in samples.items() if k[0] not in ARRIVAL_DEPENDENT and v != 0}


def reference(events: list[dict[str, Any]]) -> Figures:
    """What one clean delivery of each event records."""

    async def run() -> Figures:
        store = MemoryStore()
        for evt in events:
            await record(store, evt)
        return await figures(store, grace=86400)

    return comparable(asyncio.run(run()))


def redis_state(url: str, prefix: str) -> Figures:
    async def run() -> Figures:
        store = RedisStore(url, prefix)
        try:
            return await figures(store, grace=86400)
        finally:
            await store.close()

    return comparable(asyncio.run(run()))




@dataclass
class Attempt:
    started: float
    ended: float
    status: int  # 0: no HTTP answer (connection refused or reset)
    duplicate: bool = False


@dataclass
class Delivery:
    """Delivers every event until it gets a 2xx, from several threads (Stripe's behaviour).

    Each attempt is signed afresh, as Stripe signs each delivery attempt. urls[i] is the
    replica thread i delivers to; bounded by `deadline` seconds.
    """

    urls: list[str]
    events: list[dict[str, Any]]
    deadline: float = 60.0
    attempts: list[Attempt] = field(default_factory=list)
    delivered: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _deliver(self, url: str, events: list[dict[str, Any]]) -> None:
        stop_at = time.monotonic() + self.deadline
        with httpx.Client(timeout=10) as client:
            for evt in events:
                body = se.body(evt)
                while time.monotonic() < stop_at:
                    started = time.monotonic()
                    try:
                        response = client.post(url + "/webhooks/stripe", content=body,
                                               headers=se.signed_headers(body, SECRET))
                        status, duplicate = response.status_code, response.is_success and response.json()["duplicate"]
                    except httpx.TransportError:
                        status, duplicate = 0, False
                    with self._lock:
                        self.attempts.append(Attempt(started, time.monotonic(), status, duplicate))
                    if 200 <= status < 300:
                        with self._lock:
                            self.delivered += 1
                        break
                    time.sleep(0.1)

    def start(self, split: bool = True) -> None:
        """split: the events are shared out between the threads; else every thread sends all."""
        n = len(self.urls)
        for i, url in enumerate(self.urls):
            share = self.events[i::n] if split else self.events
            thread = threading.Thread(target=self._deliver, args=(url, share), daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait_delivered(self, count: int) -> None:
        wait_until(lambda: self.delivered >= count, timeout=30, what=f"{count} events delivered")

    def join(self) -> None:
        for thread in self._threads:
            thread.join(self.deadline + 15)
        assert not any(t.is_alive() for t in self._threads), "delivery did not finish in time"


def requests_by_result(url: str) -> dict[str, float]:
    return {dict(labels)["result"]: v for (name, labels), v in scrape(url).items()
            if name == "billingwatch_webhook_requests_total"}


@pytest.fixture
def aof_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path, appendonly=True)
    server.start()
    yield server
    server.stop()


def test_redis_stopped_mid_load_503_while_down_then_exact_counts(aof_redis: RedisServer, redis_prefix: str) -> None:
    events = mixed_events(240)
    with running_exporter(REDIS_URL=aof_redis.url, BILLINGWATCH_REDIS_PREFIX=redis_prefix) as exporter:
        delivery = Delivery([exporter.url] * 4, events)
        delivery.start()
        delivery.wait_delivered(60)
        aof_redis.stop()
        down_since = time.monotonic()
        time.sleep(1.0)
        down_until = time.monotonic()
        aof_redis.start()
        delivery.join()
        results = requests_by_result(exporter.url)

    while_down = [a for a in delivery.attempts if a.started > down_since and a.ended < down_until]
    assert while_down, "no attempt was made while Redis was down"
    assert {a.status for a in while_down} == {503}
    assert results["store_unavailable"] >= len(while_down)
    assert delivery.delivered == len(events)
    state = redis_state(aof_redis.url, redis_prefix)
    assert total(state, "billingwatch_events_total") == len(events)
    assert state == reference(events)


def test_exporter_sigkilled_mid_load_and_restarted_counts_exact(redis_url: str, redis_prefix: str) -> None:
    events = mixed_events(240)
    with running_exporter(REDIS_URL=redis_url, BILLINGWATCH_REDIS_PREFIX=redis_prefix) as exporter:
        delivery = Delivery([exporter.url] * 4, events)
        delivery.start()
        delivery.wait_delivered(60)
        exporter.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        exporter.start()
        delivery.join()

    assert any(a.status == 0 and a.started > killed_at for a in delivery.attempts), "no attempt hit the dead exporter"
    assert delivery.delivered == len(events)
    state = redis_state(redis_url, redis_prefix)
    assert total(state, "billingwatch_events_total") == len(events)
    assert state == reference(events)


def test_two_replicas_receiving_the_same_events_count_each_once(redis_url: str, redis_prefix: str) -> None:
    events = mixed_events(180)
    env = {"REDIS_URL": redis_url, "BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    with running_exporter(**env) as one, running_exporter(**env) as two:
        # Every event goes to both replicas at about the same time: a retry landing on the other one.
        delivery = Delivery([one.url, two.url], events)
        delivery.start(split=False)
        delivery.join()
        first, second = requests_by_result(one.url), requests_by_result(two.url)

    assert delivery.delivered == 2 * len(events)
    assert first["accepted"] + second["accepted"] == len(events)
    assert first["duplicate"] + second["duplicate"] == len(events)
    state = redis_state(redis_url, redis_prefix)
    expected = reference(events)
    anomalies = "billingwatch_anomalies_total"
    assert total(expected, anomalies) > 0, "the events must include anomalies for this test to mean anything"
    assert total(state, anomalies) == total(expected, anomalies)
    assert state == expected


def test_redis_restarted_with_aof_keeps_state_counters_and_dedup(aof_redis: RedisServer, redis_prefix: str) -> None:
    events = mixed_events(60)
    with running_exporter(REDIS_URL=aof_redis.url, BILLINGWATCH_REDIS_PREFIX=redis_prefix) as exporter:
        delivery = Delivery([exporter.url], events)
        delivery.start()
        delivery.join()
        before = redis_state(aof_redis.url, redis_prefix)
        anomalies = httpx.get(exporter.url + "/api/anomalies").json()["anomalies"]

        aof_redis.stop()
        aof_redis.start()
        assert redis_state(aof_redis.url, redis_prefix) == before
        # The exporter's pooled connections died with Redis: the first call may be a 503, then it reconnects.
        wait_until(lambda: httpx.get(exporter.url + "/api/anomalies").status_code == 200, what="API back")
        assert httpx.get(exporter.url + "/api/anomalies").json()["anomalies"] == anomalies

        again = Delivery([exporter.url], events)  # a replay after the restart: every id is remembered
        again.start()
        again.join()

    assert before == reference(events)
    assert anomalies
    assert all(a.duplicate for a in again.attempts if a.status == 200)
    assert again.delivered == len(events)
    assert redis_state(aof_redis.url, redis_prefix) == before
