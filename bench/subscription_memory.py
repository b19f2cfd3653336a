"""Redis memory per live subscription, which store layout 2 keeps without a TTL (docs/redis.md).

    python -m bench.subscription_memory [--subscriptions 20000]

Records N subscription.created events (each its own customer, one item, $10-$1,000 a month)
through the exporter's Recorder into a fresh redis-server, then prints INFO memory's
used_memory growth per subscription (with and without the dedup keys, which expire), MEMORY
USAGE of one subscription hash and one customer hash, and how many keys have no TTL.
"""

import argparse
import asyncio
import time

import redis

from billingwatch.detectors import build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.recorder import Recorder
from billingwatch.store import RedisStore
from testkit.processes import RedisServer

PREFIX = "billingwatch"
DEDUP_TTL, SUBSCRIPTION_TTL = 35 * 86400, 400 * 86400


async def fill(url: str, count: int) -> None:
    store = RedisStore(url, prefix=PREFIX)
    recorder = Recorder(store, build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL)
    now = int(time.time()) - 60
    try:
        for i in range(count):
            obj = se.subscription(subscription_id=f"sub_{i:08d}", customer=f"cus_{i:08d}",
                                  unit_amount=1000 + (i % 100) * 1000, created=now)
            await recorder.record(se.event("customer.subscription.created", obj, created=now))
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=20000)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
        client.set("warm-up", "1")  # allocator and dict set-up before the baseline
        client.delete("warm-up")
        base = int(server.info("memory")["used_memory"])
        asyncio.run(fill(server.url, args.subscriptions))
        used = int(server.info("memory")["used_memory"])
        keys = list(client.scan_iter(f"{{{PREFIX}}}:*", count=1000))
        dedup = [k for k in keys if k.startswith(f"{{{PREFIX}}}:e:".encode())]
        dedup_bytes = sum(int(client.memory_usage(k) or 0) for k in dedup[:1000]) / max(min(len(dedup), 1000), 1)
        sub_bytes = int(client.memory_usage(f"{{{PREFIX}}}:s:false:sub_00000000") or 0)
        customer_bytes = int(client.memory_usage(f"{{{PREFIX}}}:cu:false:cus_00000000") or 0)
        persistent = sum(1 for k in keys if client.ttl(k) == -1)
        # What stays once the dedup keys have expired (35 days on): deleted here to measure it; the
        # recent-events log is capped (BILLINGWATCH_EVENT_LOG_SIZE), not per subscription: gone too.
        for start in range(0, len(dedup), 1000):
            client.delete(*dedup[start:start + 1000])
        client.delete(f"{{{PREFIX}}}:events")
        kept = int(server.info("memory")["used_memory"])
        n = args.subscriptions
        print(f"subscriptions: {n} (one customer each), redis-server {client.info('server')['redis_version']}")
        print(f"used_memory growth: {used - base} bytes = {(used - base) / n:.0f} bytes per subscription "
              f"(with its event's dedup key, {dedup_bytes:.0f} bytes by MEMORY USAGE, and the capped events log)")
        print(f"used_memory kept once dedup keys expired: {kept - base} bytes = {(kept - base) / n:.0f} bytes "
              "per live subscription (its hash and its customer's, no TTL)")
        print(f"kept for as long as it is live (no TTL): subscription hash {sub_bytes} bytes + "
              f"customer hash {customer_bytes} bytes = {sub_bytes + customer_bytes} bytes (MEMORY USAGE)")
        print(f"keys without a TTL: {persistent} of {len(keys)} "
              f"(expected 2 per live subscription + counters, gauges, anomaly and event logs)")
        client.close()
    finally:
        server.close()


if __name__ == "__main__":
    main()
