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
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.events import parse_event
from billingwatch.recording.plan import Check, Plan, plan_event
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
             gauges: dict[bytes, bytes] | None = None) -> tuple[list[Result], list[Result]]:
    """The plans applied event by event on db 1 and in `groups` on db 2, each from a store whose
    counters hash holds `before` (and `strings` keys hold a string); then both states compared
    key for key. `gauges` gets the gauges hash both left."""
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
        if gauges is not None:
            gauges.update(first.get(("{" + prefix + "}:gauges").encode(), ("hash", {}, -1))[1])
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
    # 9e18 is COUNTER_LIMIT: apply.lua refuses what would pass it; the flag is set, as a replica would have set it
    # (a total past 2^62 with the flag clear is a state no script leaves, and the upkeep corrects).
    expected, got = run_both(redis_url, redis_prefix, plans, groups,
                             before={field: 9 * 10**18 - 10**6, "x": FLAG_AT},
                             strings={"{" + redis_prefix + "}:overflow": "1"})
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


def review_plans(seed: int, count: int) -> tuple[list[Plan], dict[tuple[str, str], int]]:
    """Radar reviews (the track op), live and test, some as history: opened and mostly closed, each
    event sometimes sent again under another id, then shuffled within a span (a close before its
    open), with redeliveries; and the opening time of each review left open, by mode and id."""
    rng = random.Random(seed)
    detectors, context = build_detectors({}), Context(state_ttl=DEDUP_TTL)
    plans: list[Plan] = []
    still_open: dict[tuple[str, str], int] = {}
    for n in range(count):
        livemode, rid = n % 3 == 0, f"prv_{seed}_{n}"
        opened_at = START - rng.randrange(60, 30 * 86400)
        closed_at = opened_at + rng.randrange(60, 86400)
        history = rng.random() < 0.3
        events = [se.event("review.opened", se.review(review_id=rid, created=opened_at, livemode=livemode),
                           created=opened_at, livemode=livemode)]
        if n % 4:
            events.append(se.event("review.closed", se.review(review_id=rid, is_open=False, created=opened_at,
                                                              livemode=livemode),
                                   created=closed_at, livemode=livemode))
        else:
            still_open[("true" if livemode else "false", rid)] = opened_at
        if rng.random() < 0.3:  # another event about the same review, a later time
            again = rng.choice(events)
            events.append({**again, "id": again["id"] + "b", "created": again["created"] + 30})
        for event in events:
            plans.append(plan_event(parse_event(event), received_at=START + 2 * 86400 + n, detectors=detectors,
                                    context=context,
                                    dedup_ttl=DEDUP_TTL, subscription_ttl=SUBSCRIPTION_TTL, history=history))
    for i in range(len(plans)):  # out of order, within a few events
        j = min(len(plans) - 1, i + rng.randrange(0, 6))
        plans[i], plans[j] = plans[j], plans[i]
    for _ in range(count // 3):  # redeliveries, soon or much later
        plans.insert(rng.randrange(len(plans) + 1), rng.choice(plans))
    return plans, still_open


def track_check(plan: Plan) -> Check:
    return next(c for c in plan.checks if c.op == "track")


@pytest.mark.parametrize("grouping", ["one batch", "one event each", "mixed"])
def test_reviews_open_now_are_tracked_in_batches_as_event_by_event(redis_url: str, redis_prefix: str,
                                                                    grouping: str) -> None:
    plans, still_open = review_plans(11, 60)
    assert all(sum(c.op == "track" for c in p.checks) == 1 for p in plans)
    groups = {"one batch": [plans], "one event each": [[p] for p in plans],
              "mixed": batches(random.Random(11), plans)}[grouping]
    gauges: dict[bytes, bytes] = {}
    expected, got = run_both(redis_url, redis_prefix, plans, groups, gauges=gauges)
    assert got == expected
    assert {kind for kind, _ in got} == {"recorded", "duplicate"}
    for mode in ("true", "false"):
        count_field, oldest_field = next(track_check(p).gauges for p in plans if p.livemode == mode)
        opened = [at for (m, _), at in still_open.items() if m == mode]
        assert opened and gauges[count_field.encode()] == str(len(opened)).encode()
        assert gauges[oldest_field.encode()] == str(min(opened)).encode()


def test_reviews_amid_traffic_with_a_small_cap_and_refused_track_checks(redis_url: str, redis_prefix: str) -> None:
    """Reviews interleaved with seeded traffic, the review set capped at 5 (tombstones and the
    oldest open reviews evicted), and track checks the store refuses."""
    reviews, _ = review_plans(12, 80)
    reviews = [replace(p, checks=[replace(c, cap=5) if c.op == "track" else c for c in p.checks]) for p in reviews]
    bad = [replace(reviews[3], event_id="evt_bad_gauges",
                   checks=[replace(track_check(reviews[3]), gauges=track_check(reviews[3]).gauges[:1])]),
           replace(reviews[4], event_id="evt_bad_time", checks=[replace(track_check(reviews[4]), at=10**11)])]
    traffic = scenario(12, 300)
    rng = random.Random(12)
    plans = list(traffic)
    for plan in [*reviews, *bad]:
        plans.insert(rng.randrange(len(plans) + 1), plan)
    expected, got = run_both(redis_url, redis_prefix, plans, batches(rng, plans))
    assert got == expected
    refused = [r for p, r in zip(plans, got, strict=True) if p in bad]
    assert refused == [("Unrecordable", "a track check needs two gauge fields and a time")] * 2


def test_a_track_check_s_set_is_ordered_with_the_batch_s_summed_gauge_writes(redis_url: str,
                                                                           redis_prefix: str) -> None:
    """A gauge field a track check sets and the batch also sums increments or maxima into (not a
    pairing the planner makes, but the scripts must agree on it): each SET lands between them."""
    def first_of_each(plans: list[Plan]) -> list[Plan]:
        return list({p.event_id: p for p in reversed(plans) if p.dedup_ttl > 0}.values())[::-1]

    traffic = first_of_each(scenario(13, 300))
    held = [p for p in traffic if p.subscription is not None and p.subscription.held][:6]
    field = held[0].subscription.gauges[0][0] if held[0].subscription else ""
    reviews = [replace(p, checks=[replace(c, gauges=(field, "oldest")) if c.op == "track" else c
                                  for c in p.checks]) for p in first_of_each(review_plans(13, 6)[0])]
    maxima = [replace(traffic[0], event_id=f"evt_max{n}", counters={}, checks=[], subscription=None, payment=None,
                      maxima={field: 10**12 + n, "oldest": 10**12 + n}) for n in range(3)]
    plans = [held[0], maxima[0], reviews[0], held[1], reviews[1], maxima[1], held[2], reviews[2], maxima[2],
             held[3], reviews[3], reviews[4], held[4], held[5], reviews[5]]
    expected, got = run_both(redis_url, redis_prefix, plans, [plans])
    assert got == expected
    assert {kind for kind, _ in got} == {"recorded"}
