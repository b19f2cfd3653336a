"""Issue 22 item 1: upgrades in place and rolling updates (store/layout.py, docs/redis.md).

The release at 886d805 (layout 1, no version) is installed from this repository's history and
run as a real exporter beside the current one on one real redis-server."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from billingwatch.fixtures import stripe_events as se
from billingwatch.store import RedisStore
from billingwatch.store.layout import LAYOUT_VERSION
from testkit.processes import Exporter, RedisServer, free_port
from tests import old_release
from tests.conftest import ROOT, SECRET
from tests.metrics import TIMING, Figures, gauge_value, in_levels_of_today, of_account, scrape, value

DAY = 86400


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of the release at 886d805."""
    return old_release.install(old_release.PREVIOUS, tmp_path_factory.mktemp("release-886d805"))


def env(redis_url: str, prefix: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    return {**base, "STRIPE_WEBHOOK_SECRET": SECRET, "REDIS_URL": redis_url, "BILLINGWATCH_REDIS_PREFIX": prefix}


def new_exporter(redis_url: str, prefix: str) -> Exporter:
    exporter = Exporter({**env(redis_url, prefix), "PYTHONPATH": str(ROOT)}, free_port())
    exporter.start()
    return exporter


def old_exporter(python: Path, redis_url: str, prefix: str) -> Exporter:
    exporter = old_release.ReleaseExporter(python, env(redis_url, prefix), free_port())
    exporter.start()
    return exporter


def deliver(exporter: Exporter, evt: dict[str, Any]) -> bool:
    """Post one signed event; returns whether it was a duplicate."""
    payload = se.body(evt)
    response = httpx.post(exporter.url + "/webhooks/stripe", content=payload,
                          headers=se.signed_headers(payload, SECRET), timeout=10)
    assert response.status_code == 200, response.text
    return bool(response.json()["duplicate"])


def sub_event(event_type: str, created: int, sub: str, customer: str, unit: int, quantity: int = 1) -> dict[str, Any]:
    obj = se.subscription(subscription_id=sub, customer=customer, unit_amount=unit, quantity=quantity,
                          created=created, status="canceled" if event_type.endswith(".deleted") else "active")
    return se.event(event_type, obj, created=created)


def scenario(t0: int) -> list[dict[str, Any]]:
    """Creates, updates, deletes, charges (two alike: a duplicate_charge anomaly), a failed charge
    and a paid invoice, each a second after the one before."""
    events: list[dict[str, Any]] = []
    clock = iter(range(t0, t0 + 1000))
    for i in range(6):
        events.append(sub_event("customer.subscription.created", next(clock), f"sub_{i}", f"cus_{i % 4}",
                                1000 * (i + 1)))
    for i in range(4):
        at = next(clock)
        events.append(se.event("charge.succeeded", se.charge(amount=5000, customer=f"cus_{i % 2}", created=at),
                               created=at))
    at = next(clock)
    events.append(se.event("charge.failed", se.charge(status="failed", amount=700, customer="cus_3", created=at),
                           created=at))
    for i in (0, 2, 4):
        events.append(sub_event("customer.subscription.updated", next(clock), f"sub_{i}", f"cus_{i % 4}",
                                1000 * (i + 1), quantity=2))
    at = next(clock)
    events.append(se.event("invoice.paid", se.invoice(subscription="sub_1", customer="cus_1", total=2000, created=at),
                           created=at))
    for i in (0, 3):
        events.append(sub_event("customer.subscription.deleted", next(clock), f"sub_{i}", f"cus_{i % 4}",
                                1000 * (i + 1)))
    events.append(sub_event("customer.subscription.updated", next(clock), "sub_5", "cus_1", 9000))
    events.append(sub_event("customer.subscription.deleted", next(clock), "sub_2", "cus_2", 3000))
    return events


def figures(exporter: Exporter, families: set[str] | None = None) -> Figures:
    """What the events determine (no timing, no per-process figure), of `families` if given; the
    default account's (the account label dropped) with anomaly levels as today's exporter shows them,
    so releases before either compare."""
    return {k: v for k, v in in_levels_of_today(of_account(scrape(exporter.url))).items()
            if not k[0].startswith(TIMING) and (families is None or k[0] in families)}


def same_counts(exporter: Exporter, before: Figures) -> bool:
    """The families `before` has read the same on `exporter`; series this release adds to them
    (a new label value, e.g. result="quarantined") read 0."""
    now = figures(exporter, {name for name, _ in before})
    assert {k: now.get(k) for k in before} == before
    assert all(v == 0 for k, v in now.items() if k not in before), {k: v for k, v in now.items() if k not in before}
    return True


def families(exporter: Exporter) -> set[str]:
    return {name for name, _ in scrape(exporter.url)}


@pytest.fixture
def prefixes() -> Iterator[tuple[str, str]]:
    yield "t" + uuid.uuid4().hex[:12], "t" + uuid.uuid4().hex[:12]


def test_a_rolling_update_from_886d805_counts_as_one_release_does(
        previous: Path, redis_server: RedisServer, prefixes: tuple[str, str]) -> None:
    """Old replica alone, then old and new side by side (the new one migrates at start-up), then the
    new one alone with the old one still up: /metrics of both equals a clean run of the new release."""
    rolling, clean = prefixes
    events = scenario(int(time.time()) - 3600)
    last = sub_event("customer.subscription.updated", int(time.time()) - 60, "sub_1", "cus_1", 2000, quantity=3)
    third = len(events) // 3
    old = old_exporter(previous, redis_server.url, rolling)
    new: Exporter | None = None
    duplicates: list[bool] = []
    try:
        for evt in events[:third]:
            duplicates.append(deliver(old, evt))
        new = new_exporter(redis_server.url, rolling)
        replicas = (old, new)
        for i, evt in enumerate(events[third:2 * third]):
            duplicates.append(deliver(replicas[i % 2], evt))
            # Stripe redelivers an earlier event, to whichever replica the load balancer picks.
            duplicates.append(deliver(replicas[(i + 1) % 2], events[i]))
        for i, evt in enumerate(events[2 * third:]):
            duplicates.append(deliver(new, evt))
            duplicates.append(deliver(replicas[i % 2], events[third + i]))
        # The old replica still writes after the migration (in its shape: a TTL on a held subscription).
        duplicates.append(deliver(old, last))
        both = families(old) & families(new)
        rolled_old, rolled_new = figures(old, both), figures(new, both)
    finally:
        old.stop()
        if new is not None:
            new.stop()
    single = new_exporter(redis_server.url, clean)
    try:
        clean_duplicates = [deliver(single, evt) for evt in events[:third]]
        for i, evt in enumerate(events[third:2 * third]):
            clean_duplicates += [deliver(single, evt), deliver(single, events[i])]
        for i, evt in enumerate(events[2 * third:]):
            clean_duplicates += [deliver(single, evt), deliver(single, events[third + i])]
        clean_duplicates.append(deliver(single, last))
        expected = figures(single, both)
    finally:
        single.stop()
    assert duplicates == clean_duplicates
    assert value(expected, "billingwatch_subscriptions", status="active", livemode="false") == 3
    assert rolled_new == expected
    # The old release reads the same figures; the series this release adds (the money signals'
    # event types) read 0 here, as on the old release they do not exist.
    assert {k: expected.get(k) for k in rolled_old} == rolled_old
    assert all(v == 0 for k, v in expected.items() if k not in rolled_old)
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    try:
        assert client.get(f"{{{rolling}}}:layout") == str(LAYOUT_VERSION).encode()
        # The old replica gave the hashes it wrote last a TTL; serve's background upkeep takes it off.
        held = [key for key in client.scan_iter(f"{{{rolling}}}:s:*")
                if any(f.startswith(b"g:") for f in client.hkeys(key))]
        assert len(held) == 3 and any(client.ttl(key) > 0 for key in held)
        corrected = asyncio.run(upkeep(redis_server.url, rolling))
        assert corrected > 0 and all(client.ttl(key) == -1 for key in held)
    finally:
        client.close()


async def upkeep(redis_url: str, prefix: str) -> int:
    store = RedisStore(redis_url, prefix=prefix)
    try:
        result = await store.upkeep_layout()
    finally:
        await store.close()
    assert isinstance(result, int)
    return result


def migrate(redis_url: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "billingwatch", "migrate", *args], env=env(redis_url, prefix),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def ttls(client: "redis.Redis[bytes]", prefix: str, pattern: str) -> dict[bytes, int]:
    return {key: int(client.ttl(key)) for key in client.scan_iter(f"{{{prefix}}}:{pattern}")}


def test_a_store_written_by_886d805_is_migrated_in_place_with_every_count_kept(
        previous: Path, redis_server: RedisServer, prefixes: tuple[str, str]) -> None:
    prefix = prefixes[0]
    events = scenario(int(time.time()) - 3600)
    old = old_exporter(previous, redis_server.url, prefix)
    try:
        for evt in events:
            assert not deliver(old, evt)
        before = figures(old)
    finally:
        old.stop()
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    try:
        keys_before = sorted(client.scan_iter(f"{{{prefix}}}:*"))
        subs = ttls(client, prefix, "s:*")
        assert subs and all(t > 0 for t in subs.values())  # layout 1: every hash has a TTL
        dry = migrate(redis_server.url, prefix, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "store layout: 1, this release: 2" in dry.stdout
        assert "persist: 5 keys (would" in dry.stdout, dry.stdout  # 3 held subscriptions, 2 customers with MRR
        after_dry = ttls(client, prefix, "s:*")  # the dry run wrote nothing
        assert after_dry.keys() == subs.keys() and all(t > 0 for t in after_dry.values())
        assert sorted(client.scan_iter(f"{{{prefix}}}:*")) == keys_before
        # A replica died after the first step, its lock still held; two replicas then start at once.
        client.hset(f"{{{prefix}}}:layout:steps", "fields", "done")
        client.set(f"{{{prefix}}}:layout:lock", "dead-replica", px=1500)
        runs = [subprocess.Popen([sys.executable, "-m", "billingwatch", "migrate"], env=env(redis_server.url, prefix),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                for _ in range(2)]
        outputs = [run.communicate(timeout=120) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        assert client.get(f"{{{prefix}}}:layout") == b"2"
        assert not client.exists(f"{{{prefix}}}:layout:lock", f"{{{prefix}}}:layout:steps")
        again = migrate(redis_server.url, prefix)
        assert again.returncode == 0 and "nothing to do" in again.stdout
        # Nothing lost: every key is still there (dedup, detector memory, logs, subscriptions, customers).
        assert sorted(client.scan_iter(f"{{{prefix}}}:*")) == sorted([*keys_before, f"{{{prefix}}}:layout".encode()])
        held = {key for key in client.scan_iter(f"{{{prefix}}}:s:*")
                if any(f.startswith(b"g:") for f in client.hkeys(key))}
        assert len(held) == 3 and all(client.ttl(key) == -1 for key in held)
        assert all(client.ttl(key) > 0 for key in client.scan_iter(f"{{{prefix}}}:s:*") if key not in held)
    finally:
        client.close()
    new = new_exporter(redis_server.url, prefix)
    try:
        assert same_counts(new, before)  # every count kept
        assert all(deliver(new, evt) for evt in events)  # dedup kept: every redelivery a duplicate
        assert same_counts(new, before)
    finally:
        new.stop()


def test_a_newer_layout_is_refused_and_never_written(redis_server: RedisServer, make_client: Any) -> None:
    prefix = "t" + uuid.uuid4().hex[:12]
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    client.set(f"{{{prefix}}}:layout", LAYOUT_VERSION + 1)
    store = RedisStore(redis_server.url, prefix=prefix)
    app = make_client(store=store)
    try:
        evt = sub_event("customer.subscription.created", int(time.time()), "sub_n", "cus_n", 1000)
        payload = se.body(evt)
        response = app.post("/webhooks/stripe", content=payload, headers=se.signed_headers(payload, SECRET))
        reason = f"store layout {LAYOUT_VERSION + 1} is newer than this release knows ({LAYOUT_VERSION})"
        assert response.status_code == 503 and reason in response.json()["error"]
        ready = app.get("/ready")
        assert ready.status_code == 503 and reason in ready.json()["reason"]
        assert app.get("/api/events").status_code == 503
        # An event the store refuses would be quarantined: into a newer layout neither, 503 with the reason.
        bad = se.body(sub_event("customer.subscription.created", int(time.time()), "sub_b", "cus_b", 10**15))
        refused_bad = app.post("/webhooks/stripe", content=bad, headers=se.signed_headers(bad, SECRET))
        assert refused_bad.status_code == 503 and reason in refused_bad.json()["error"]
        assert sorted(client.scan_iter(f"{{{prefix}}}:*")) == [f"{{{prefix}}}:layout".encode()]  # nothing written
        refused = migrate(redis_server.url, prefix)
        assert refused.returncode == 2 and reason in refused.stderr and len(refused.stderr.splitlines()) == 1
        serve = subprocess.run([sys.executable, "-m", "billingwatch", "serve", "--port", str(free_port())],
                               env=env(redis_server.url, prefix), capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert serve.returncode == 2 and reason in serve.stderr
    finally:
        client.close()


def test_a_subscription_hash_of_2820652_is_migrated(redis_server: RedisServer, tmp_path: Path) -> None:
    """The issue's rolling-update case: a subscription created through the 2820652 release, updated
    and deleted through this one, leaves no subscription and no MRR once the store is migrated."""
    python = old_release.install(old_release.MOVEMENTS, tmp_path)
    prefix = "t" + uuid.uuid4().hex[:12]
    t0 = int(time.time()) - 600
    old = old_exporter(python, redis_server.url, prefix)
    try:
        assert not deliver(old, sub_event("customer.subscription.created", t0, "sub_m", "cus_m", 5000))
    finally:
        old.stop()
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    try:
        assert client.hexists(f"{{{prefix}}}:s:false:sub_m", "held")  # the 2820652 shape
        done = migrate(redis_server.url, prefix)
        assert done.returncode == 0 and "fields: 1 keys" in done.stdout, done.stdout + done.stderr
        assert not client.hexists(f"{{{prefix}}}:s:false:sub_m", "held")
    finally:
        client.close()
    new = new_exporter(redis_server.url, prefix)
    try:
        assert gauge_value(scrape(new.url), "billingwatch_mrr_amount", currency="usd", livemode="false") == 50
        assert not deliver(new, sub_event("customer.subscription.updated", t0 + 1, "sub_m", "cus_m", 6000))
        assert not deliver(new, sub_event("customer.subscription.deleted", t0 + 2, "sub_m", "cus_m", 6000))
        samples = scrape(new.url)
        assert gauge_value(samples, "billingwatch_subscriptions", status="active", livemode="false") == 0
        assert gauge_value(samples, "billingwatch_mrr_amount", currency="usd", livemode="false") == 0
    finally:
        new.stop()


MIGRATE_WITH_SHORT_LOCK = """
import asyncio, sys
from billingwatch.store import RedisStore
from billingwatch.store.layout import Migration

async def main(url: str, prefix: str) -> None:
    store = RedisStore(url, prefix=prefix)
    await Migration(store._redis, "{" + prefix + "}", lock_ttl_ms=1000).run()
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_a_migration_killed_half_way_is_finished_by_the_next(redis_server: RedisServer) -> None:
    """SIGKILL mid-way (after its first step, during the second): the next run takes over once the
    dead one's lock lapses, skips the step done, finishes the other; every key ends migrated."""
    prefix = "t" + uuid.uuid4().hex[:12]
    count = 25_000
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    try:
        with client.pipeline(transaction=False) as pipe:
            for i in range(count):  # subscription hashes as the release at 886d805 writes them
                key = f"{{{prefix}}}:s:false:sub_{i}"
                pipe.hset(key, mapping={"at": 1, "rk": 0, "cur": "usd", "cm": 1000, "end": 2,
                                        "g:subscriptions|active|false": 1, "g:mrr|usd|false": 1000})
                pipe.expire(key, 400 * DAY)
                if len(pipe) >= 10_000:
                    pipe.execute()
            pipe.execute()
        run = subprocess.Popen([sys.executable, "-c", MIGRATE_WITH_SHORT_LOCK, redis_server.url, prefix],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while client.hget(f"{{{prefix}}}:layout:steps", "fields") != b"done" and run.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        run.kill()
        run.wait(10)
        assert client.get(f"{{{prefix}}}:layout") is None, "the kill came after the migration finished"
        assert client.exists(f"{{{prefix}}}:layout:lock")  # the dead replica's
        rerun = migrate(redis_server.url, prefix)
        assert rerun.returncode == 0, rerun.stderr
        assert "fields: 0 keys" in rerun.stdout  # marked done: not run again
        assert client.get(f"{{{prefix}}}:layout") == b"2"
        keys = list(client.scan_iter(f"{{{prefix}}}:s:*", count=10_000))
        assert len(keys) == count
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.ttl(key)
            assert set(pipe.execute()) == {-1}
    finally:
        client.close()


def test_every_store_script_knows_the_layout_this_release_writes() -> None:
    """apply.lua, quarantine.lua and verdict.lua each refuse a newer layout: their LAYOUT is the release's."""
    scripts = ROOT / "exporter" / "billingwatch" / "store"
    for name in ("apply.lua", "quarantine.lua", "verdict.lua"):
        assert f"local LAYOUT = {LAYOUT_VERSION}" in (scripts / name).read_text(), name
