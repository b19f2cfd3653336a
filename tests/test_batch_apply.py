"""apply_batch.lua against apply.lua (store/apply_batch.lua, docs/redis.md): the same plans applied
once event by event (RedisStore.apply: apply.lua) and once in batches (RedisStore.apply_many:
apply_batch.lua) on two databases of a real redis-server leave key-for-key the same state and
give every event the same result.

The scenario is seeded traffic (commands/traffic.py, every injected anomaly), live and history,
with redeliveries within and across batches, subscription snapshots out of order, events the
store refuses, and totals near the overflow bound (the batch's fallback to apply.lua).
"""

import asyncio
import json
import random
from dataclasses import replace
from importlib import resources
from typing import Any

import pytest
import redis

from billingwatch.commands.traffic import ORDER, Traffic, stream
from billingwatch.detectors import Context, build_detectors
from billingwatch.recording.events import parse_event
from billingwatch.recording.plan import Plan, plan_event
from billingwatch.store import Outcome, RedisStore, StoreUnavailable, Unrecordable
from billingwatch.store.batch_args import event_args
from billingwatch.store.redis_store import BATCH_EVENTS
from tests.recording import DEDUP_TTL, SUBSCRIPTION_TTL

START = 1_790_000_000  # the scenario's clock: fixed, so the state does not depend on when it runs
FLAG_AT = 2**62


def scenario(seed: int, count: int) -> list[Plan]:
    """Seeded traffic planned once (the detectors' in-process memory moves with planning), then
    disordered: redeliveries, subscription snapshots swapped, refused plans."""
    rng = random.Random(seed)
    clock = iter(range(START, START + 10 * count))
    traffic = Traffic(rng, run=f"b{seed}", clock=lambda: float(next(clock)))
    detectors, context = build_detectors({}), Context(state_ttl=DEDUP_TTL)
    plans = []
    for n, event in enumerate(stream(traffic, count, list(ORDER))):
        plans.append(plan_event(parse_event(event), received_at=START + 10 * n + 5, detectors=detectors,
                                context=context, dedup_ttl=DEDUP_TTL, subscription_ttl=SUBSCRIPTION_TTL,
                                history=rng.random() < 0.3))
    out: list[Plan] = []
    for plan in plans:
        out.append(plan)
        roll = rng.random()
        if roll < 0.08:  # a redelivery, soon (often within the batch) or much later
            out.insert(rng.randrange(max(0, len(out) - 400), len(out)), rng.choice(out))
        elif roll < 0.1:
            out.append(replace(plan, event_id=plan.event_id + "x", dedup_ttl=0))  # refused: TTL out of range
    subscriptions = [i for i, p in enumerate(out) if p.subscription is not None]
    for _ in range(len(subscriptions) // 4):  # an older snapshot arriving after a newer one
        a, b = sorted(rng.sample(subscriptions, 2))
        out[a], out[b] = out[b], out[a]
    return out


def batches(rng: random.Random, plans: list[Plan]) -> list[list[Plan]]:
    out, i = [], 0
    while i < len(plans):
        size = rng.choice([1, 2, 16, 100, BATCH_EVENTS + 44])
        out.append(plans[i:i + size])
        i += size
    return out


Result = tuple[str, Any]


def result(r: Outcome | Unrecordable | StoreUnavailable) -> Result:
    if isinstance(r, Outcome):
        return ("duplicate", None) if r.duplicate else ("recorded", r.anomalies)
    return type(r).__name__, str(r)


async def per_event(store: RedisStore, plans: list[Plan]) -> list[Result]:
    out = []
    for plan in plans:
        try:
            out.append(result(await store.apply(plan)))
        except Unrecordable as exc:
            out.append(result(exc))
    return out


async def batched(store: RedisStore, groups: list[list[Plan]]) -> list[Result]:
    out = []
    for group in groups:
        out += [result(r) for r in await store.apply_many(group)]
    return out


def state(client: "redis.Redis[bytes]", prefix: str) -> dict[bytes, Any]:
    """Every key of the store: its type, its value by type (log lines as JSON), whether it expires
    and, roughly, when."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(match="{" + prefix + "}*", count=1000):
        kind = client.type(key).decode()
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = [json.loads(v) for v in client.lrange(key, 0, -1)]
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = client.smembers(key)
        ttl = client.ttl(key)
        out[key] = (kind, value, ttl if ttl < 0 else round(ttl / 100))
    return out


def run_both(url: str, prefix: str, plans: list[Plan], groups: list[list[Plan]],
             before: dict[str, int] | None = None, strings: dict[str, str] | None = None,
             ) -> tuple[list[Result], list[Result]]:
    """The plans applied event by event on db 1 and in `groups` on db 2, each from a store whose
    counters hash holds `before` (and `strings` keys hold a string); then both states compared
    key for key."""
    urls = [url + "/1", url + "/2"]
    clients = [redis.Redis.from_url(u) for u in urls]
    for client in clients:
        if before:
            client.hset("{" + prefix + "}:counters", mapping=before)  # type: ignore[arg-type]
        for key, value in (strings or {}).items():
            client.set(key, value)

    async def run() -> tuple[list[Result], list[Result]]:
        one, many = RedisStore(urls[0], prefix), RedisStore(urls[1], prefix)
        try:
            return await per_event(one, plans), await batched(many, groups)
        finally:
            await one.close()
            await many.close()

    try:
        expected, got = asyncio.run(run())
        first, second = (state(c, prefix) for c in clients)
        assert first.keys() == second.keys()
        for key, value in first.items():
            assert second[key] == value, key
        return expected, got
    finally:
        for client in clients:
            keys = list(client.scan_iter(match="{" + prefix + "}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_batches_leave_the_state_and_results_of_event_by_event(redis_url: str, redis_prefix: str,
                                                               seed: int) -> None:
    plans = scenario(seed, 1500)
    groups = batches(random.Random(seed), plans)
    expected, got = run_both(redis_url, redis_prefix, plans, groups)
    assert got == expected
    kinds = {kind for kind, _ in got}
    assert kinds == {"recorded", "duplicate", "Unrecordable"}
    assert any(kind == "recorded" and anomalies for kind, anomalies in got)  # detectors hit, in batches too
    assert any(p.subscription is not None for p in plans) and any(p.payment is not None for p in plans)
    assert any(len(g) > BATCH_EVENTS for g in groups)


def busiest_counter(plans: list[Plan]) -> str:
    counts: dict[str, int] = {}
    for plan in plans:
        for name, value in plan.counters.items():
            counts[name] = counts.get(name, 0) + abs(value)
    return max(counts, key=lambda name: counts[name])


def test_quarantined_events_are_recorded_by_their_requeue_only(redis_url: str, redis_prefix: str) -> None:
    """A quarantined id's dedup key holds 'q' (quarantine.lua): a redelivery stays a duplicate,
    its requeue records it once; with and without a subscription snapshot."""
    plans = scenario(10, 120)
    marked = [plans[30], next(p for p in plans[40:] if p.subscription is not None)]
    requeues = [replace(p, requeue=True) for p in marked]
    tail = [plans[31], *requeues, *marked, *requeues]
    todo = [p for p in plans if p not in marked] + tail
    keys = {"{" + redis_prefix + "}" + f":e:{p.livemode}:{p.event_id}": "q" for p in marked}
    expected, got = run_both(redis_url, redis_prefix, todo, [todo[:50], todo[50:]], strings=keys)
    assert got == expected
    assert [kind for kind, _ in got[-6:]] == ["recorded", "recorded", "duplicate", "duplicate", "duplicate",
                                              "duplicate"]


def test_totals_near_the_bound_fall_back_to_the_exact_script(redis_url: str, redis_prefix: str) -> None:
    """A total just below 2^62: the batch that takes it over sets the overflow flag (as apply.lua
    does), and every later batch is applied by apply.lua, refusing exactly as it does."""
    plans = scenario(3, 400)
    field = busiest_counter(plans)
    groups = batches(random.Random(3), plans)
    expected, got = run_both(redis_url, redis_prefix, plans, groups, before={field: FLAG_AT - 5})
    assert got == expected


def test_totals_near_the_limit_are_refused_as_apply_lua_refuses(redis_url: str, redis_prefix: str) -> None:
    plans = scenario(4, 300)
    field = busiest_counter(plans)
    groups = batches(random.Random(4), plans)
    # 9e18 is COUNTER_LIMIT: apply.lua refuses what would pass it; the flag is set, as a replica would have set it.
    expected, got = run_both(redis_url, redis_prefix, plans, groups,
                             before={field: 9 * 10**18 - 10**6, "x": FLAG_AT})
    assert got == expected
    assert ("Unrecordable", f"total {field} would leave the range a 64-bit counter can hold") in got


def test_an_event_past_the_budget_and_the_rest_of_its_batch_go_to_apply_lua(redis_url: str,
                                                                          redis_prefix: str) -> None:
    plans = scenario(5, 200)
    field = busiest_counter(plans)
    huge = [replace(plans[40], event_id="evt_huge1", counters={field: 10**16}),  # 17 digits: exact script
            replace(plans[41], event_id="evt_huge2", counters={field: 3 * 10**18}),
            replace(plans[42], event_id="evt_huge3", counters={field: 3 * 10**18})]  # past the budget
    plans = plans[:50] + huge + plans[50:]
    expected, got = run_both(redis_url, redis_prefix, plans, [plans[:120], plans[120:]])
    assert got == expected
    assert got[50:53] == [("recorded", []), ("recorded", []), ("recorded", [])]


def test_a_key_of_another_type_stops_the_batch_at_its_event_and_the_events_before_are_recorded(
        redis_url: str, redis_prefix: str) -> None:
    plans = scenario(9, 200)
    at = next(i for i, p in enumerate(plans) if p.subscription is not None and i > 20)
    sub = plans[at].subscription
    assert sub is not None
    broken = "{" + redis_prefix + "}" + f":s:{sub.livemode}:{sub.id}"
    expected, got = run_both(redis_url, redis_prefix, plans[:at], [plans[:at + 10]],
                             strings={broken: "not a hash"})
    assert got[:at] == expected
    assert {kind for kind, _ in got[at:]} == {"StoreUnavailable"}
    assert "WRONGTYPE" in got[at][1]


def test_event_args_are_the_plan_in_the_store_s_keys() -> None:
    plan = scenario(6, 50)[10]
    args = event_args(plan, "acme")
    assert args.keys[0] == f"{{acme}}:e:{plan.livemode}:{plan.event_id}"
    assert all(key.startswith("{acme}:") for key in args.keys)
    assert all(isinstance(a, str) for a in args.args)
    assert event_args(plan, "acme") == args  # equal by keys and args: what a planner of its own must produce
    assert args.plan() is plan


def test_the_layout_upkeep_sets_the_flag_for_a_total_an_earlier_release_took_past_the_bound(
        redis_url: str, redis_prefix: str) -> None:
    """An earlier release keeps no flag: the upkeep (at start, then hourly) finds such a total,
    and batches go to apply.lua from then on."""
    client = redis.Redis.from_url(redis_url)
    plan = scenario(7, 20)[0]

    def script_calls() -> int:
        return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    async def run() -> tuple[bool, bool, list[Result], int]:
        store = RedisStore(redis_url, redis_prefix)
        try:
            clean = await store.mark_overflow()
            client.hset(store.gauges_key, "g", -FLAG_AT)
            await store.upkeep_layout()
            flagged = bool(client.exists(store.overflow_key))
            for script in ("apply.lua", "apply_batch.lua"):  # loaded: no NOSCRIPT call in the count
                client.script_load(resources.files("billingwatch.store").joinpath(script).read_text())
            before = script_calls()
            results = [result(r) for r in await store.apply_many([plan])]
            return clean, flagged, results, script_calls() - before
        finally:
            await store.close()

    try:
        clean, flagged, results, calls = asyncio.run(run())
        assert not clean and flagged
        assert results[0][0] == "recorded"
        assert calls == 2  # the batch script, which left the event to apply.lua, and apply.lua
    finally:
        client.delete(*client.scan_iter(match="{" + redis_prefix + "}*"))
        client.close()


def test_an_event_utf8_cannot_carry_is_refused_alone_and_non_ascii_text_is_kept(redis_url: str,
                                                                               redis_prefix: str) -> None:
    plans = [p for p in scenario(8, 40) if p.log is not None][:3]
    assert plans[1].log is not None and plans[2].log is not None
    lone = replace(plans[1], event_id="evt_\ud800")  # a lone surrogate: no UTF-8 for it
    accented = replace(plans[2], log=replace(plans[2].log, customer="cus_ünïcødé"))

    async def run() -> tuple[list[Result], list[dict[str, Any]]]:
        store = RedisStore(redis_url, redis_prefix)
        try:
            return [result(r) for r in await store.apply_many([plans[0], lone, accented])], await store.events(10)
        finally:
            await store.close()

    client = redis.Redis.from_url(redis_url)
    try:
        results, lines = asyncio.run(run())
        assert [kind for kind, _ in results] == ["recorded", "Unrecordable", "recorded"]
        assert results[1][1] == "the event cannot be encoded for the store (UnicodeEncodeError)"
        assert lines[0]["customer"] == "cus_ünïcødé" and lines[0]["result"] == "accepted"
    finally:
        client.delete(*client.scan_iter(match="{" + redis_prefix + "}*"))
        client.close()
