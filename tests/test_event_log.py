"""The recent-events log (issue 13): the same lines from the Redis store and the in-process store,
capped, newest first, written in the apply script's one atomic step."""

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from billingwatch.detectors import build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.plan import Check, LogEntry, Plan, rejected_entry
from billingwatch.recording.recorder import Recorder
from billingwatch.store import MemoryStore, RedisStore, Store, Unrecordable
from testkit.processes import RedisServer

pytestmark = pytest.mark.anyio
DAY = 86400


def open_log_store(kind: str, request: pytest.FixtureRequest, size: int) -> Store:
    if kind == "memory":
        return MemoryStore(event_log_size=size)
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisStore(server.url, prefix="t" + uuid.uuid4().hex[:12], event_log_size=size)


@pytest.fixture(params=["memory", "redis"])
def small(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A store whose event log keeps 3 lines."""
    yield open_log_store(request.param, request, 3)


@pytest.fixture(params=["memory", "redis"])
def big(request: pytest.FixtureRequest) -> Iterator[Store]:
    yield open_log_store(request.param, request, 100)


async def record(store: Store, evt: dict[str, Any], received_at: float | None = None, history: bool = False) -> None:
    recorder = Recorder(store, build_detectors({}), 35 * DAY, 400 * DAY)
    await recorder.record(evt, received_at=received_at, history=history)


def duplicate_pair(customer: str, now: int) -> list[dict[str, Any]]:
    return [se.event("charge.succeeded", se.charge(customer=customer, charge_id=f"ch_{customer}_{n}", amount=4999),
                     event_id=f"evt_{customer}_{n}", created=now - 60 + n) for n in (1, 2)]


async def test_a_line_carries_the_events_facts(big: Store, now: int) -> None:
    charge = se.charge(customer="cus_facts", charge_id="ch_facts", amount=10**12 - 1, currency="jpy")
    await record(big, se.event("charge.succeeded", charge, event_id="evt_facts", created=now - 5), now + 0.9)
    (line,) = await big.events(10)
    # Every key on every line; the amount exact (Lua's doubles would round 13 digits).
    assert line == {
        "id": "evt_facts", "type": "charge.succeeded", "created": now - 5, "received": now, "livemode": False,
        "customer": "cus_facts", "object": "ch_facts", "amount": 10**12 - 1, "currency": "jpy",
        "history": False, "reason": None, "account": None, "result": "accepted", "anomalies": [],
    }


async def test_generic_facts_of_other_objects(big: Store) -> None:
    await record(big, se.event("invoice.paid", se.invoice(customer="cus_inv", invoice_id="in_1", total=-500)))
    customer = se.shape("customer")
    customer.update(id="cus_self")
    await record(big, se.event("customer.updated", customer))
    newest, oldest = await big.events(10)
    assert (oldest["customer"], oldest["object"], oldest["amount"], oldest["currency"]) == ("cus_inv", "in_1", -500,
                                                                                           "usd")
    # A customer object is its own customer; it has a currency but no amount.
    assert (newest["customer"], newest["object"], newest["amount"]) == ("cus_self", "cus_self", None)


async def test_log_is_capped_newest_first(small: Store) -> None:
    for n in range(5):
        await record(small, se.event("customer.updated", se.shape("customer"), event_id=f"evt_cap{n}"))
    assert [line["id"] for line in await small.events(10)] == ["evt_cap4", "evt_cap3", "evt_cap2"]
    assert [line["id"] for line in await small.events(2)] == ["evt_cap4", "evt_cap3"]


async def test_the_anomaly_is_on_the_line_of_the_event_that_raised_it(big: Store, now: int) -> None:
    first, second = duplicate_pair("cus_dup", now)
    await record(big, first)
    await record(big, second)
    newest, oldest = await big.events(10)
    assert (newest["id"], newest["anomalies"]) == (second["id"], ["duplicate_charge"])
    assert (oldest["id"], oldest["anomalies"]) == (first["id"], [])


async def test_a_redelivery_is_logged_as_duplicate_and_changes_no_count(big: Store, now: int) -> None:
    first, second = duplicate_pair("cus_redeliver", now)
    await record(big, first)
    await record(big, second)
    before = await big.snapshot(time.time(), 0)
    await record(big, second, received_at=now + 30)
    assert await big.snapshot(time.time(), 0) == before
    again = (await big.events(1))[0]
    assert (again["id"], again["result"], again["anomalies"], again["received"]) == (
        second["id"], "duplicate", [], now + 30)
    assert len(await big.anomalies(10)) == 1


async def test_history_is_flagged_with_its_anomalies(big: Store, now: int) -> None:
    for evt in duplicate_pair("cus_hist", now):
        await record(big, evt, history=True)
    newest = (await big.events(1))[0]
    assert (newest["history"], newest["result"], newest["anomalies"]) == (True, "accepted", ["duplicate_charge"])


async def test_a_rejected_event_is_logged_with_its_reason(small: Store, now: int) -> None:
    document = se.event("charge.succeeded", se.charge(customer="cus_rej", charge_id="ch_rej"), event_id="evt_rej")
    await small.log_rejected(rejected_entry(document, "charge.amount must be an integer", now, False))
    await small.log_rejected(rejected_entry(["not", "an", "event"], "body must be a JSON object", now, True))
    odd, line = await small.events(10)
    assert (line["id"], line["result"], line["reason"], line["customer"], line["object"], line["anomalies"]) == (
        "evt_rej", "rejected", "charge.amount must be an integer", "cus_rej", "ch_rej", [])
    assert (odd["id"], odd["type"], odd["created"], odd["livemode"], odd["history"]) == (None, None, None, None, True)
    for n in range(4):  # capped too
        await small.log_rejected(rejected_entry({"id": f"evt_r{n}"}, "x", now, False))
    assert [x["id"] for x in await small.events(10)] == ["evt_r3", "evt_r2", "evt_r1"]


async def test_an_event_the_store_refuses_leaves_no_line(big: Store, now: int) -> None:
    """The checks before the first write still come first: a refused event writes no log line."""
    entry = LogEntry(id="evt_refused", type="x.y", created=now, received=now, livemode=False)
    plan = Plan(event_id="evt_refused", dedup_ttl=60, counters={"x|a": 1}, log=entry,
                checks=[Check(op="sum", key="s", ttl=60, member="m", at=now, window=60, amount=10**13, threshold=1)])
    with pytest.raises(Unrecordable):
        await big.apply(plan)
    assert await big.events(10) == []
    assert await big.recorded([("evt_refused", "false")]) == [False]


async def test_both_stores_write_the_same_lines(redis_server: RedisServer, now: int) -> None:
    memory = MemoryStore()
    redis = RedisStore(redis_server.url, prefix="t" + uuid.uuid4().hex[:12])
    first, second = duplicate_pair("cus_same", now)
    odd = se.charge(customer="cus_é\u2603", charge_id="ch_odd", amount=123_456_789_012, currency="kwd")
    scenario = [first, second, second, se.event("charge.succeeded", odd, event_id="evt_odd")]
    for store in (memory, redis):
        for n, evt in enumerate(scenario):
            await record(store, evt, received_at=now + n)
        await store.log_rejected(rejected_entry({"id": "evt_bad"}, "event.type is missing", now + 9, False))
    lines = await memory.events(100)
    assert lines == await redis.events(100)
    assert [(x["id"], x["result"]) for x in lines] == [
        ("evt_bad", "rejected"), ("evt_odd", "accepted"), (second["id"], "duplicate"), (second["id"], "accepted"),
        (first["id"], "accepted")]
    assert lines[1]["customer"] == "cus_é\u2603" and lines[1]["amount"] == 123_456_789_012
    await redis.close()
