"""Scrape cost and Redis memory as the store grows, and proof that its state stays bounded.

    python -m bench.state [--levels 1000,100000,1000000] [--traffic 20000]

Fills a fresh redis-server to each level of tracked customers (each: one active subscription
and one successful charge, applied with the exporter's own Lua script, replayed in bulk
through `redis-cli --pipe`), then times GET /metrics on a real `billingwatch serve`, and
measures Redis memory per customer and per event-id dedup key. Finally it records a mix of
realistic events through the store and counts the keys that have no TTL.
"""

import argparse
import asyncio
import hashlib
import statistics
import subprocess
import time
from importlib import resources
from typing import Any

import httpx
import redis

from bench import harness, traffic
from billingwatch.detectors import build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.plan import Plan
from billingwatch.recording.recorder import Recorder
from billingwatch.store import Outcome, RedisStore
from testkit.processes import RedisServer, free_port

PREFIX = "billingwatch"
DEDUP_TTL, SUBSCRIPTION_TTL = 35 * 86400, 400 * 86400
TOKEN = "TPL000000"  # replaced by each customer's number in the replayed script calls


def recorder(store: RedisStore) -> Recorder:
    return Recorder(store, build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL)


class ScriptCalls(RedisStore):
    """A Redis store that keeps the script call of each event instead of running it, for bulk replay."""

    def __init__(self, url: str) -> None:
        super().__init__(url, PREFIX)
        self.calls: list[list[str]] = []

    async def apply(self, plan: Plan) -> Outcome:
        keys, args = self.script_call(plan)
        self.calls.append([str(len(keys)), *keys, *(str(a) for a in args)])
        return Outcome(duplicate=False)


def script_calls(url: str, events: list[dict[str, Any]]) -> list[list[str]]:
    """The apply-script calls (numkeys, KEYS..., ARGV...) that record these events, through the Recorder."""
    store = ScriptCalls(url)

    async def run() -> None:
        record = recorder(store).record
        for evt in events:
            await record(evt)
        await store.close()

    asyncio.run(run())
    return store.calls


def templates(url: str) -> list[list[str]]:
    """The script calls that track one customer, with TOKEN where its number goes."""
    now = int(time.time())
    customer, sub = f"cus_{TOKEN}", f"sub_{TOKEN}"
    events = [
        se.event("customer.subscription.updated",
                 se.subscription(customer=customer, subscription_id=sub, period_end=now + 20 * 86400),
                 event_id=f"evt_s{TOKEN}", created=now),
        se.event("charge.succeeded", se.charge(customer=customer, charge_id=f"ch_{TOKEN}"),
                 event_id=f"evt_c{TOKEN}", created=now),
    ]
    return script_calls(url, events)


def dedup_only_template(url: str) -> list[str]:
    """An event type BillingWatch only counts: recording it adds nothing but its dedup key."""
    evt = se.event("customer.updated", se.shape("customer"), event_id=f"evt_u{TOKEN}")
    (call,) = script_calls(url, [evt])
    return call


def resp(parts: list[str]) -> bytes:
    out = [f"*{len(parts)}\r\n"]
    for part in parts:
        out.append(f"${len(part.encode())}\r\n{part}\r\n")
    return "".join(out).encode()


def replay(port: int, sha: str, calls: list[list[str]], start: int, stop: int) -> float:
    """EVALSHA every template call for numbers start..stop-1 through redis-cli --pipe; seconds taken."""
    began = time.monotonic()
    pipe = subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert pipe.stdin is not None
    encoded = [resp(["EVALSHA", sha, *call]) for call in calls]
    batch: list[bytes] = []
    for n in range(start, stop):
        number = f"{n:09d}".encode()
        batch.extend(e.replace(TOKEN.encode(), number) for e in encoded)
        if len(batch) >= 20_000:
            pipe.stdin.write(b"".join(batch))
            batch = []
    pipe.stdin.write(b"".join(batch))
    pipe.stdin.close()
    output = pipe.stdout.read().decode() if pipe.stdout else ""
    pipe.wait(600)
    if "errors: 0" not in output:
        raise RuntimeError(f"redis-cli --pipe reported errors: {output}")
    return time.monotonic() - began


def scrape(url: str, times: int = 30) -> tuple[float, float, int, int]:
    durations, size, series = [], 0, 0
    with httpx.Client(timeout=30) as client:
        for _ in range(times):
            began = time.perf_counter()
            text = client.get(url + "/metrics").text
            durations.append((time.perf_counter() - began) * 1000)
            size = len(text.encode())
            series = sum(1 for line in text.splitlines() if line.startswith("billingwatch_"))
    durations.sort()
    return statistics.median(durations), durations[int(len(durations) * 0.95) - 1], size, series


def used_memory(rds: redis.Redis) -> int:
    rds.execute_command("MEMORY", "PURGE")
    return int(rds.info("memory")["used_memory"])


def key_kind(key: str) -> str:
    name = key.split(":", 1)[1]
    if name.startswith("c:"):
        return "c:" + name[2:].split(":", 1)[0]
    return name.split(":", 1)[0] if ":" in name else name


async def record_traffic(url: str, count: int) -> float:
    store = RedisStore(url, PREFIX)
    record = recorder(store).record
    began = time.monotonic()
    for evt in traffic.events(count, seed=11):
        await record(evt)
    await store.close()
    return time.monotonic() - began


def bounded_report(rds: redis.Redis) -> None:
    kinds: dict[str, list[int]] = {}
    no_ttl: list[str] = []
    keys = [k.decode() for k in rds.scan_iter(count=10_000)]
    for i in range(0, len(keys), 10_000):
        chunk = keys[i:i + 10_000]
        with rds.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.ttl(key)
            ttls = pipe.execute()
        for key, ttl in zip(chunk, ttls, strict=True):
            if ttl < 0:
                no_ttl.append(key)
            else:
                kinds.setdefault(key_kind(key), []).append(ttl)
    print(f"keys: {len(keys)}; with a TTL: {len(keys) - len(no_ttl)}; without: {len(no_ttl)}")
    print("| key kind | keys | max TTL (days) |")
    print("|---|---:|---:|")
    for kind, ttls in sorted(kinds.items()):
        print(f"| {kind} | {len(ttls)} | {max(ttls) / 86400:.1f} |")
    # Layout 2 (docs/redis.md): live subscriptions and customers holding MRR never expire.
    money = [key for key in no_ttl if key_kind(key) in ("s", "cu")]
    print(f"keys without a TTL that hold money (live subscriptions, customers with MRR): {len(money)}")
    print("other keys without a TTL (each must be one of the fixed keys):")
    for key in sorted(set(no_ttl) - set(money)):
        kind = rds.type(key).decode()
        size = {"hash": rds.hlen, "zset": rds.zcard, "list": rds.llen}[kind](key)
        print(f"  {key} ({kind}, {size} entries)")
    largest = 0
    checks = [k for k in keys if key_kind(k).startswith("c:")]
    for i in range(0, len(checks), 10_000):
        with rds.pipeline(transaction=False) as pipe:
            for key in checks[i:i + 10_000]:
                pipe.zcard(key)
            sizes = pipe.execute(raise_on_error=False)  # "once" checks are strings, not sets
        largest = max([largest, *(n for n in sizes if isinstance(n, int))])
    print(f"largest detector set: {largest} members (cap 64); anomaly log: {rds.llen('{billingwatch}:anomalies')} "
          f"records (cap 1000)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1000,100000,1000000", help="tracked customers at each measurement")
    parser.add_argument("--traffic", type=int, default=20_000, help="realistic events recorded at the end")
    parser.add_argument("--dedup-sample", type=int, default=100_000, help="dedup-only events for the per-key figure")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    print(f"machine: {harness.machine()}")
    server = RedisServer()  # a throw-away one: no persistence, in a temporary directory
    server.start()
    rds = redis.Redis.from_url(server.url)
    script = resources.files("billingwatch.store").joinpath("apply.lua").read_text()
    sha = rds.script_load(script)
    assert sha == hashlib.sha1(script.encode()).hexdigest()
    calls = templates(server.url)
    port = free_port()
    exporter = harness.start_server(["-m", "billingwatch", "serve", "--port", str(port)], port,
                                    {"REDIS_URL": server.url, "STRIPE_WEBHOOK_SECRET": harness.SECRET})
    url = f"http://127.0.0.1:{port}"
    try:
        empty = used_memory(rds)
        rows, filled, previous_memory = [], 0, empty
        for level in levels:
            seconds = replay(server.port, sha, calls, filled, level)
            memory = used_memory(rds)
            per_customer = (memory - previous_memory) / (level - filled)
            median, p95, size, series = scrape(url)
            gauge = httpx.get(url + "/metrics").text
            held = 'billingwatch_subscriptions{account="default",livemode="false",status="active"}'
            active = next(line for line in gauge.splitlines() if line.startswith(held))
            rows.append((level, seconds, median, p95, size, series, memory, per_customer, active.split()[-1]))
            print(f"  filled {level} customers ({seconds:.1f}s)", flush=True)
            filled, previous_memory = level, memory
        print()
        print("| customers | fill s | /metrics median ms | p95 ms | bytes | billingwatch_ lines | "
              "Redis used_memory MiB | bytes per customer added | active subscriptions gauge |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for level, seconds, median, p95, size, series, memory, per_customer, active in rows:
            print(f"| {level} | {seconds:.1f} | {median:.2f} | {p95:.2f} | {size} | {series} | "
                  f"{memory / 2**20:.1f} | {per_customer:.0f} | {active} |")

        before = used_memory(rds)
        replay(server.port, sha, [dedup_only_template(server.url)], 0, args.dedup_sample)
        per_dedup = (used_memory(rds) - before) / args.dedup_sample
        print()
        print(f"per dedup key (event id, 35-day TTL): {per_dedup:.0f} bytes of used_memory "
              f"({args.dedup_sample} dedup-only events)")
        sample = {
            "e: (dedup)": "{billingwatch}:e:false:evt_c000000001",
            "s: (subscription hash)": "{billingwatch}:s:false:sub_000000001",
            "c:dup (duplicate_charge window)": "{billingwatch}:c:dup:false:cus_000000001:usd:2000",
            "c:cur (currency set)": "{billingwatch}:c:cur:false:cus_000000001",
        }
        for what, key in sample.items():
            print(f"  MEMORY USAGE {what}: {rds.memory_usage(key)} bytes")
        print(f"per customer excluding its 2 events' dedup keys: {rows[-1][7] - 2 * per_dedup:.0f} bytes")

        seconds = asyncio.run(record_traffic(server.url, args.traffic))
        print()
        print(f"recorded {args.traffic} realistic events through RedisStore.apply in {seconds:.1f}s; then:")
        bounded_report(rds)
    finally:
        harness.stop_server(exporter)
        rds.close()
        server.close()


if __name__ == "__main__":
    main()
