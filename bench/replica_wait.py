"""The cost of BILLINGWATCH_REDIS_WAIT_REPLICAS=1: the exporter with and without WAIT 1, on a
master with one replica on loopback.

    python -m bench.replica_wait [--events 20000] [--duration 5] [--rounds 3] [--connections 16]

Same wrk load and checks as bench.ingest (every answered request a distinct recorded event);
the two targets alternate over the rounds, and the ratio is taken within a round.
"""

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import redis

from bench import harness, traffic
from bench.ingest import Result, bench_target
from billingwatch.fixtures import stripe_events as se
from testkit.processes import RedisServer, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="distinct signed events per target (count bound)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per target and round (time bound)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    print(f"machine: {harness.machine()}")
    bodies = [se.body(e) for e in traffic.events(args.events)]
    print(f"load: {len(bodies)} distinct events, wrk -t1 -c{args.connections} -d{args.duration}s, 1 worker")
    started = time.monotonic()
    master = RedisServer()
    replica = RedisServer(replica_of=master.port)
    workdir = Path(tempfile.mkdtemp(prefix="bench-wait-"))
    rds = redis.Redis.from_url(master.url)
    base_env = {"REDIS_URL": master.url, "STRIPE_WEBHOOK_SECRET": harness.SECRET}
    targets = [
        ("exporter, no WAIT", base_env),
        ("exporter, WAIT 1", {**base_env, "BILLINGWATCH_REDIS_WAIT_REPLICAS": "1"}),
    ]
    limit = args.events - 4 * args.connections  # each event once: stop before the bodies wrap around
    rounds: list[list[Result]] = []
    try:
        master.start()
        replica.start()
        wait_until(lambda: master.replicas_online() == 1, what="the replica in sync")
        for number in range(1, args.rounds + 1):
            results = []
            for name, env in targets:
                result = bench_target(name, ["-m", "billingwatch", "serve"], env, bodies, limit, rds, workdir, args)
                results.append(result)
                print(f"  round {number}: {name}: {result.rate:.0f}/s, p50 {result.p50_ms:.2f} ms, "
                      f"p99 {result.p99_ms:.2f} ms; {result.check}", flush=True)
            rounds.append(results)
    finally:
        rds.close()
        replica.close()
        master.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print("| target | events/s | p50 ms | p99 ms | server CPU (cores) | µs per event (1 / rate) |")
    print("|---|---:|---:|---:|---:|---:|")
    for i in range(len(targets)):
        r = sorted((row[i] for row in rounds), key=lambda r: r.rate)[len(rounds) // 2]
        print(f"| {r.name} | {r.rate:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_cores:.2f} | {1e6 / r.rate:.0f} |")
    ratios = sorted(row[1].rate / row[0].rate for row in rounds)
    extra = statistics.median(1e6 / row[1].rate - 1e6 / row[0].rate for row in rounds)
    print(f"\nWAIT 1 / no WAIT throughput: {statistics.median(ratios):.2f} x (rounds: "
          f"{', '.join(f'{x:.2f}' for x in ratios)}); median extra time per event {extra:.0f} µs")
    print(f"total bench time {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
