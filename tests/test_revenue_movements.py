"""Revenue movements (issue 16): MRR movements by kind, paying customers, MRR by plan and trials,
computed in the store's atomic step from the stored previous state; both stores (docs/revenue.md)."""

import functools
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from billingwatch.config import ConfigError, from_env
from billingwatch.detectors import build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.metrics import families as fam
from billingwatch.metrics import fields
from billingwatch.recording.recorder import Recorder
from billingwatch.store import MemoryStore, Outcome, RedisStore, Store, Unrecordable
from billingwatch.store.contract import COUNTER_LIMIT
from tests.conftest import ROOT
from tests.metrics import Samples, gauge_value, scrape, value
from tests.recording import DEDUP_TTL, SUBSCRIPTION_TTL, figures

DAY = 86400
KINDS = ("new", "expansion", "contraction", "churn", "reactivation")
# Families that hold revenue state or movements; a scenario's result is all of them.
REVENUE = ("billingwatch_mrr_movement_amount_total", "billingwatch_customer_movements_total",
           "billingwatch_paying_customers", "billingwatch_mrr_amount", "billingwatch_mrr_by_plan_amount",
           "billingwatch_trials_started_total", "billingwatch_trials_ended_total", "billingwatch_subscriptions")


async def record(store: Store, evt: dict[str, Any], *, history: bool = False,
                 plans: dict[str, str] | None = None) -> Outcome:
    recorder = Recorder(store, build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL, plans=plans or {})
    return await recorder.record(evt, history=history)


def sub_event(event_type: str, created: int, *, sub: str, customer: str | None = "cus_s", unit: int = 10000,
              quantity: int = 1, status: str = "active", currency: str = "usd", **kw: Any) -> dict[str, Any]:
    obj = se.subscription(subscription_id=sub, customer=customer or "", unit_amount=unit, quantity=quantity,
                          status="canceled" if event_type.endswith(".deleted") else status, currency=currency,
                          created=created, **kw)
    if customer is None:
        obj["customer"] = None
    return se.event(event_type, obj, created=created)


def revenue(samples: Samples) -> dict[Any, float]:
    return {key: v for key, v in samples.items() if key[0] in REVENUE}


def moved(samples: Samples, kind: str, currency: str = "usd") -> tuple[float, float]:
    """(amount in major units, customers) moved by `kind`."""
    return (value(samples, "billingwatch_mrr_movement_amount_total", kind=kind, currency=currency, livemode="false"),
            value(samples, "billingwatch_customer_movements_total", kind=kind, currency=currency, livemode="false"))


def net(samples: Samples, currency: str) -> float:
    """new + expansion + reactivation - contraction - churn: what MRR gained from the movements."""
    sign = {"new": 1, "expansion": 1, "reactivation": 1, "contraction": -1, "churn": -1}
    return sum(s * moved(samples, kind, currency)[0] for kind, s in sign.items())


def mrr(samples: Samples, currency: str = "usd") -> float:
    return gauge_value(samples, "billingwatch_mrr_amount", currency=currency, livemode="false")


def paying(samples: Samples, currency: str = "usd") -> float:
    return value(samples, "billingwatch_paying_customers", currency=currency, livemode="false")


@pytest.fixture
def fresh_store(store: Store, request: pytest.FixtureRequest) -> Iterator[Callable[[], Store]]:
    """Another empty store of the same kind as `store`."""
    def make() -> Store:
        if isinstance(store, MemoryStore):
            return MemoryStore()
        return RedisStore(request.getfixturevalue("redis_server").url, prefix="t" + uuid.uuid4().hex[:12])
    yield make


# ---------------------------------------------------------------- the scenario of issue 16


def scenario() -> list[dict[str, Any]]:
    """A customer subscribes at 100.00/month, adds seats to 150.00, drops to 120.00, cancels, and a
    month later takes a new subscription at 80.00."""
    t0 = int(time.time()) - 40 * DAY  # read when the test builds it
    return [
        sub_event("customer.subscription.created", t0, sub="sub_one", unit=5000, quantity=2),
        sub_event("customer.subscription.updated", t0 + DAY, sub="sub_one", unit=5000, quantity=3),
        sub_event("customer.subscription.updated", t0 + 2 * DAY, sub="sub_one", unit=4000, quantity=3),
        sub_event("customer.subscription.deleted", t0 + 3 * DAY, sub="sub_one", unit=4000, quantity=3),
        sub_event("customer.subscription.created", t0 + 33 * DAY, sub="sub_two", unit=8000),
    ]


@pytest.mark.anyio
async def test_scenario_moves_each_kind_by_its_exact_amount_once(
        store: Store, fresh_store: Callable[[], Store]) -> None:
    events = scenario()
    for evt in events:
        assert not (await record(store, evt)).duplicate
    after = await figures(store)
    assert {kind: moved(after, kind) for kind in KINDS} == {
        "new": (100.0, 1), "expansion": (50.0, 1), "contraction": (30.0, 1), "churn": (120.0, 1),
        "reactivation": (80.0, 1)}
    assert (mrr(after), paying(after)) == (80.0, 1)
    assert net(after, "usd") == mrr(after)

    for evt in events:  # every event redelivered once
        assert (await record(store, evt)).duplicate
    assert revenue(await figures(store)) == revenue(after)

    shuffled = random.Random(16).sample(events, len(events))
    for evt in shuffled:  # the whole scenario replayed as history, out of order: duplicates all
        await record(store, evt, history=True)
    assert revenue(await figures(store)) == revenue(after)

    empty = fresh_store()  # the same shuffled history into an empty store: state, no movement
    for evt in shuffled:
        await record(empty, evt, history=True)
    imported = await figures(empty)
    assert (mrr(imported), paying(imported)) == (80.0, 1)
    assert {kind: moved(imported, kind) for kind in KINDS} == {kind: (0.0, 0.0) for kind in KINDS}

    for seed in range(3):  # live but out of order: the same MRR, paying customers and net movement
        reordered = fresh_store()
        for evt in random.Random(seed).sample(events, len(events)):
            await record(reordered, evt)
        got = await figures(reordered)
        assert (mrr(got), paying(got), net(got, "usd")) == (80.0, 1, 80.0)


# ---------------------------------------------------------------- the invariant


def random_traffic(rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Snapshots of several customers' subscriptions (distinct times), and each customer's final MRR
    per currency (major units) from each subscription's newest snapshot."""
    events: list[dict[str, Any]] = []
    newest: dict[str, tuple[int, str, str, float]] = {}  # sub → (at, customer, currency, mrr)
    clock = int(time.time()) - 300 * DAY
    for c in range(8):
        customer = f"cus_inv{c}"
        for s in range(rng.randint(1, 3)):
            sub, currency = f"sub_inv{c}_{s}", rng.choice(("usd", "usd", "eur"))
            steps = rng.randint(1, 6)
            for step in range(steps):
                clock += rng.randint(1, 5 * DAY)
                status = rng.choice(("active", "active", "active", "past_due", "trialing", "unpaid"))
                ended = step == steps - 1 and rng.random() < 0.4
                event_type = ("customer.subscription.deleted" if ended else
                              "customer.subscription.created" if step == 0 else "customer.subscription.updated")
                unit, quantity = rng.choice((1000, 2500, 9900)), rng.randint(1, 4)
                events.append(sub_event(event_type, clock, sub=sub, customer=customer, unit=unit, quantity=quantity,
                                        status=status, currency=currency))
                held = not ended and status in ("active", "past_due")
                newest[sub] = (clock, customer, currency, unit * quantity / 100 if held else 0.0)
    final: dict[str, dict[str, float]] = {}
    for _, customer, currency, amount in newest.values():
        by_currency = final.setdefault(customer, {})
        by_currency[currency] = by_currency.get(currency, 0.0) + amount
    return events, final


@pytest.mark.anyio
async def test_movements_always_sum_to_the_mrr_change_under_reordering_and_redelivery(store: Store) -> None:
    rng = random.Random(1616)
    events, final = random_traffic(rng)
    deliveries = events + rng.sample(events, len(events) // 3)  # a third delivered twice
    rng.shuffle(deliveries)
    for n, evt in enumerate(deliveries, 1):
        await record(store, evt)
        if n % 10 == 0 or n == len(deliveries):
            got = await figures(store)
            for currency in ("usd", "eur"):
                held = frozenset({("currency", currency), ("livemode", "false"), ("account", "default")})
                if ("billingwatch_mrr_amount", held) in got:
                    assert net(got, currency) == pytest.approx(mrr(got, currency), abs=1e-6)
    got = await figures(store)
    for currency in ("usd", "eur"):
        assert mrr(got, currency) == pytest.approx(sum(c.get(currency, 0.0) for c in final.values()))
        assert paying(got, currency) == sum(1 for c in final.values() if c.get(currency, 0.0) > 0)
    customers = sum(1 for c in final.values() for amount in c.values() if amount > 0)
    assert customers > 0, "the traffic must leave some paying customers"


# ---------------------------------------------------------------- the rules, one by one


@pytest.mark.anyio
async def test_unpaid_is_churn_and_paying_again_is_reactivation(store: Store, now: int) -> None:
    t0 = now - 10 * DAY
    for n, status in enumerate(("active", "unpaid", "active")):
        await record(store, sub_event("customer.subscription.updated", t0 + n * DAY, sub="sub_u", status=status))
    got = await figures(store)
    assert [moved(got, kind) for kind in ("new", "churn", "reactivation")] == [(100.0, 1), (100.0, 1), (100.0, 1)]
    assert paying(got) == 1


@pytest.mark.anyio
async def test_each_currency_is_its_own_customer_mrr(store: Store, now: int) -> None:
    t0 = now - 10 * DAY
    await record(store, sub_event("customer.subscription.created", t0, sub="sub_usd", currency="usd"))
    await record(store, sub_event("customer.subscription.created", t0 + DAY, sub="sub_eur", currency="eur",
                                  unit=5000))
    await record(store, sub_event("customer.subscription.created", t0 + 2 * DAY, sub="sub_usd2", currency="usd",
                                  unit=2000))
    got = await figures(store)
    assert moved(got, "new", "usd") == (100.0, 1) and moved(got, "new", "eur") == (50.0, 1)
    assert moved(got, "expansion", "usd") == (20.0, 1)
    assert (paying(got, "usd"), paying(got, "eur")) == (1, 1)


@pytest.mark.anyio
async def test_a_snapshot_that_moves_currency_takes_its_mrr_out_of_the_old_one(store: Store, now: int) -> None:
    t0 = now - 10 * DAY
    await record(store, sub_event("customer.subscription.created", t0, sub="sub_cur", currency="usd"))
    await record(store, sub_event("customer.subscription.updated", t0 + DAY, sub="sub_cur", currency="eur",
                                  unit=5000))
    got = await figures(store)
    assert moved(got, "churn", "usd") == (100.0, 1) and moved(got, "new", "eur") == (50.0, 1)
    assert (paying(got, "usd"), paying(got, "eur"), mrr(got, "usd"), mrr(got, "eur")) == (0, 1, 0, 50.0)


@pytest.mark.anyio
async def test_a_subscription_without_customer_is_its_own_customer(store: Store, now: int) -> None:
    t0 = now - 10 * DAY
    await record(store, sub_event("customer.subscription.created", t0, sub="sub_anon_a", customer=None))
    await record(store, sub_event("customer.subscription.created", t0, sub="sub_anon_b", customer=None, unit=3000))
    got = await figures(store)
    assert moved(got, "new") == (130.0, 2) and paying(got) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("first, second, kept_mrr", [
    # created and updated in the same second, updated delivered first: created never replaces it
    (("customer.subscription.updated", 15000), ("customer.subscription.created", 10000), 150.0),
    # updated and deleted in the same second, deleted first: a deleted one always wins
    (("customer.subscription.deleted", 15000), ("customer.subscription.updated", 10000), 0.0),
    # equal time and rank: the later arrival wins (as before)
    (("customer.subscription.updated", 15000), ("customer.subscription.updated", 10000), 100.0),
])
async def test_equal_time_snapshots_are_ranked_created_updated_deleted(
        store: Store, first: tuple[str, int], second: tuple[str, int], kept_mrr: float, now: int) -> None:
    at = now - DAY
    await record(store, sub_event("customer.subscription.created", at - DAY, sub="sub_tie", unit=10000))
    for event_type, unit in (first, second):
        await record(store, sub_event(event_type, at, sub="sub_tie", unit=unit))
    got = await figures(store)
    assert mrr(got) == kept_mrr
    assert net(got, "usd") == kept_mrr
    assert paying(got) == (1 if kept_mrr else 0)


# ---------------------------------------------------------------- trials


def trial_event(event_type: str, created: int, sub: str, status: str, trial_start: int, trial_end: int,
                **kw: Any) -> dict[str, Any]:
    return sub_event(event_type, created, sub=sub, customer="cus_" + sub, status=status, trial_start=trial_start,
                     trial_end=trial_end, **kw)


async def trials(store: Store) -> tuple[float, float, float]:
    got = await figures(store)
    return (value(got, "billingwatch_trials_started_total", livemode="false"),
            value(got, "billingwatch_trials_ended_total", outcome="converted", livemode="false"),
            value(got, "billingwatch_trials_ended_total", outcome="expired", livemode="false"))


@pytest.mark.anyio
async def test_trials_start_convert_and_expire_once_each(store: Store, now: int) -> None:
    start = now - 20 * DAY
    end = start + 14 * DAY
    started = trial_event("customer.subscription.created", start, "sub_t1", "trialing", start, end)
    converted = trial_event("customer.subscription.updated", end, "sub_t1", "active", start, end)
    for evt in (started, converted, started, converted):  # redelivered: counted once
        await record(store, evt)
    assert await trials(store) == (1, 1, 0)
    assert gauge_value(await figures(store), "billingwatch_subscriptions", status="trialing", livemode="false") == 0
    # A later cancellation of the converted subscription is no expired trial: the trial ended once.
    await record(store, trial_event("customer.subscription.deleted", end + 5 * DAY, "sub_t1", "canceled", start, end))
    assert await trials(store) == (1, 1, 0)

    await record(store, trial_event("customer.subscription.created", start, "sub_t2", "trialing", start, end))
    assert gauge_value(await figures(store), "billingwatch_subscriptions", status="trialing", livemode="false") == 1
    await record(store, trial_event("customer.subscription.deleted", end + 3600, "sub_t2", "canceled", start, end))
    assert await trials(store) == (2, 1, 1)
    # Paused at the trial's end (no payment method) expires it too.
    await record(store, trial_event("customer.subscription.paused", end, "sub_t3", "paused", start, end))
    assert await trials(store) == (3, 1, 2)

    # A trial that ended long before the subscription is first seen counts neither way.
    old_start, old_end = now - 100 * DAY, now - 86 * DAY
    await record(store, trial_event("customer.subscription.updated", now - DAY, "sub_t4", "active", old_start,
                                    old_end))
    await record(store, trial_event("customer.subscription.deleted", now - 3600, "sub_t5", "canceled", old_start,
                                    old_end))
    assert await trials(store) == (3, 1, 2)


@pytest.mark.anyio
async def test_trials_from_history_claim_their_keys_but_count_nothing(store: Store, now: int) -> None:
    start = now - 20 * DAY
    end = start + 14 * DAY
    await record(store, trial_event("customer.subscription.created", start, "sub_h", "trialing", start, end),
                 history=True)
    await record(store, trial_event("customer.subscription.updated", end, "sub_h", "active", start, end),
                 history=True)
    assert await trials(store) == (0, 0, 0)
    # A live event of the same trial afterwards (another event id) is not counted either.
    await record(store, trial_event("customer.subscription.updated", end + 60, "sub_h", "active", start, end))
    assert await trials(store) == (0, 0, 0)
    # ... but its MRR moved as history: state only, no movement; the live update changes no MRR.
    got = await figures(store)
    assert mrr(got) == 100.0 and paying(got) == 1 and moved(got, "new") == (0.0, 0.0)


# ---------------------------------------------------------------- MRR by plan


PLANS = {"price_pro": "pro", "prod_team": "team"}


def items(*specs: tuple[str, str, int, int, str]) -> list[dict[str, Any]]:
    return [se.subscription_item(price_id=price, product=product, unit_amount=unit, quantity=quantity,
                                 interval=interval, subscription_id="sub_plans")
            for price, product, unit, quantity, interval in specs]


def test_mrr_by_plan_splits_mrr_by_the_configured_mapping(store: Store, make_client: Any, now: int) -> None:
    client = make_client(store=store, plans=PLANS, currencies=("usd",))

    def deliver(evt: dict[str, Any]) -> None:  # on the app's event loop: the store's connections live there
        client.portal.call(functools.partial(record, store, evt, plans=PLANS))

    at_start = scrape(client)
    for plan in ("pro", "team", "other"):  # every configured plan and other, at 0 from start
        assert value(at_start, "billingwatch_mrr_by_plan_amount", plan=plan, currency="usd", livemode="false") == 0
    assert paying(at_start) == 0 and moved(at_start, "churn") == (0.0, 0.0)

    obj = se.subscription(subscription_id="sub_plans", customer="cus_plans", created=now - 2 * DAY)
    obj["items"]["data"] = items(("price_pro", "prod_pro", 5000, 1, "month"),  # price id: pro
                                 ("price_seat", "prod_team", 3000, 2, "month"),  # product id: team
                                 ("price_misc", "prod_misc", 12000, 1, "year"))  # unmapped: other, 10/month
    deliver(se.event("customer.subscription.created", obj, created=now - 2 * DAY))
    got = scrape(client)

    def by_plan(samples: Samples) -> dict[str, float]:
        return {plan: value(samples, "billingwatch_mrr_by_plan_amount", plan=plan, currency="usd", livemode="false")
                for plan in ("pro", "team", "other")}

    assert by_plan(got) == {"pro": 50.0, "team": 60.0, "other": 10.0}
    assert sum(by_plan(got).values()) == mrr(got) == 120.0
    obj["items"]["data"] = obj["items"]["data"][1:]  # drops pro
    deliver(se.event("customer.subscription.updated", obj, created=now - DAY))
    got = scrape(client)
    assert by_plan(got) == {"pro": 0.0, "team": 60.0, "other": 10.0}
    assert sum(by_plan(got).values()) == mrr(got) == 70.0
    assert moved(got, "contraction") == (50.0, 1)


@pytest.mark.anyio
async def test_without_plans_every_item_is_other(store: Store, now: int) -> None:
    await record(store, sub_event("customer.subscription.created", now - DAY, sub="sub_np", unit=4200))
    got = await figures(store)
    assert value(got, "billingwatch_mrr_by_plan_amount", plan="other", currency="usd", livemode="false") == 42.0


@pytest.mark.parametrize("setting, message", [
    ("price_1=Pro", "plan name 'Pro' must be"),
    ("price_1", "is not price_or_product_id=plan_name"),
    ("=pro", "is not price_or_product_id=plan_name"),
    ("price 1=pro", "is not price_or_product_id=plan_name"),
    ("price_1=pro,price_1=team", "'price_1' is mapped to two plans"),
    ("price_1=" + "a" * 33, "must be 1 to 32 characters"),
    (",".join(f"price_{n}=plan{n}" for n in range(51)), "at most 50 distinct plan names"),
    (",".join(f"price_{n}=pro" for n in range(1001)), "at most 1000 price or product ids"),
])
def test_plans_setting_is_validated_at_start_up(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match="BILLINGWATCH_PLANS: .*" + message):
        from_env({"BILLINGWATCH_PLANS": setting})


def test_plans_setting_parses_and_serve_refuses_a_bad_one_in_one_line() -> None:
    settings = from_env({"BILLINGWATCH_PLANS": " price_1=pro , prod_2=team.v2,price_1=pro,"})
    assert dict(settings.plans) == {"price_1": "pro", "prod_2": "team.v2"}
    assert settings.plan_names == ("other", "pro", "team.v2")
    env = {"PYTHONPATH": str(ROOT), "STRIPE_WEBHOOK_SECRET": "whsec_x", "BILLINGWATCH_PLANS": "price_1=Pro"}
    result = subprocess.run([sys.executable, "-m", "billingwatch", "serve", "--port", "1"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "BILLINGWATCH_PLANS: plan name 'Pro'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- nothing half-way


@pytest.mark.anyio
async def test_a_movement_total_out_of_range_is_refused_with_nothing_written(store: Store, now: int) -> None:
    near = fields.field(fam.MRR_MOVEMENT_AMOUNT, "new", "usd", "false")
    await store.increment({near: COUNTER_LIMIT - 5})
    before = await store.snapshot(time.time(), 0)
    evt = sub_event("customer.subscription.created", now - DAY, sub="sub_over", customer="cus_over")
    with pytest.raises(Unrecordable, match="would leave the range"):
        await record(store, evt)
    assert await store.snapshot(time.time(), 0) == before
    assert await store.recorded([(evt["id"], "false")]) == [False]
    if isinstance(store, RedisStore):  # neither the subscription nor its customer was written
        assert await store._redis.exists(store.key("s:false:sub_over"), store.key("cu:false:cus_over")) == 0
