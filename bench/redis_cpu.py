"""Redis CPU per event: apply.lua event by event against apply_batch.lua in batches (issue 27).

    python -m bench.redis_cpu [--events 10000] [--sizes 16,100,500] [--rounds 3]

Plans --events distinct events of bench/traffic.py's mix once as live traffic and once as
history (replay), then records each set into a fresh redis-server (FLUSHALL between runs) once
per path: apply.lua per event (pipelined, as apply_many sent it before the batch script) and
apply_batch.lua in batches of each size. Redis's own time in the script calls is read from INFO
commandstats (reset before each run): microseconds per event, the median over --rounds (paths
alternate within a round), and each path's ratio to apply.lua measured in the same round. Every
run is checked: each event recorded, none a duplicate.
"""

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import redis

from bench import harness, traffic
from billingwatch.detectors import Context, build_detectors
from billingwatch.recording.events import parse_event
from billingwatch.recording.plan import Plan, plan_event
from billingwatch.store import Outcome, RedisStore
from testkit.processes import RedisServer

PREFIX = "billingwatch"
DEDUP_TTL, SUBSCRIPTION_TTL = 35 * 86400, 400 * 86400
PIPELINE = 100  # apply.lua calls per pipelined round trip (the per-event path)


def plans(count: int, history: bool) -> list[Plan]:
    now = int(time.time())
    detectors, context = build_detectors({}), Context(state_ttl=DEDUP_TTL)
    return [plan_event(parse_event(evt), received_at=now, detectors=detectors, context=context, dedup_ttl=DEDUP_TTL,
                       subscription_ttl=SUBSCRIPTION_TTL, history=history)
            for evt in traffic.events(count, now=now)]


def cpu_seconds(pid: int) -> float:
    """The process's time on a CPU, all threads, in nanoseconds (/proc schedstat), not clock ticks."""
    return sum(int(path.read_text().split()[0]) for path in Path(f"/proc/{pid}/task").glob("*/schedstat")) / 1e9


def script_usec(client: "redis.Redis[bytes]") -> tuple[int, int]:
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("usec", 0)), int(stats.get("calls", 0))


def run(server: RedisServer, todo: list[Plan], size: int) -> tuple[float, float]:
    """Record `todo` (size 0: apply.lua per event): Redis µs per event in the script calls
    (commandstats) and of the redis-server process's time on a CPU (all it did, /proc schedstat)."""
    url = server.url
    assert server.process is not None
    client = redis.Redis.from_url(url)
    cpu = [0.0]
    client.flushall()

    async def apply() -> list[object]:
        store = RedisStore(url, PREFIX, batch_events=max(size, 1))
        try:
            await store.apply_many(todo[:1])  # loads the scripts before the count starts
            client.config_resetstat()
            cpu[0] = cpu_seconds(server.process.pid)  # type: ignore[union-attr]
            step = size or PIPELINE
            out: list[object] = []
            for i in range(1, len(todo), step):
                group = todo[i:i + step]
                out += await (store.apply_many(group) if size else store._apply_each(group))
            cpu[0] = cpu_seconds(server.process.pid) - cpu[0]  # type: ignore[union-attr]
            return out
        finally:
            await store.close()

    results = asyncio.run(apply())
    usec, _ = script_usec(client)
    client.close()
    if not all(isinstance(r, Outcome) and not r.duplicate for r in results):
        raise SystemExit(f"size {size}: not every event was recorded once")
    return usec / len(results), cpu[0] * 1e6 / len(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--sizes", default="16,100,500")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [0, *(int(s) for s in args.sizes.split(","))]
    print(harness.machine(), flush=True)
    server = RedisServer()
    server.start()
    try:
        for mode in ("live", "history"):
            todo = plans(args.events, history=mode == "history")
            figures: dict[int, list[tuple[float, float, float, float]]] = {s: [] for s in sizes}
            for _ in range(args.rounds):
                base = (0.0, 0.0)
                for size in sizes:
                    usec, cpu = run(server, todo, size)
                    base = (usec, cpu) if size == 0 else base
                    figures[size].append((usec, usec / base[0], cpu, cpu / base[1]))
            print(f"\n{mode}, {args.events} events, median of {args.rounds} rounds")
            print("| path | script µs/event (commandstats) | vs apply.lua | redis-server CPU µs/event | vs apply.lua |")
            print("|---|---|---|---|---|")
            for size in sizes:
                name = "apply.lua per event" if size == 0 else f"apply_batch.lua, {size}/call"
                cols = [statistics.median(f[j] for f in figures[size]) for j in range(4)]
                print(f"| {name} | {cols[0]:.1f} | {cols[1]:.2f}x | {cols[2]:.1f} | {cols[3]:.2f}x |", flush=True)
    finally:
        server.close()


if __name__ == "__main__":
    main()
