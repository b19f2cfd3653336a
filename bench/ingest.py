"""Ingest benchmark: the exporter against the bare-Starlette and one-round-trip ceilings.

    python -m bench.ingest [--events 40000] [--duration 5] [--rounds 3] [--connections 16] [--workers auto]

Every target gets the same wrk load (bench/post.lua) of distinct, validly signed Stripe
events on loopback, bounded by --events and --duration. Redis is a fresh redis-server,
flushed before each target. Prints events/s, p50/p99 latency and the server's CPU and RSS,
then the exporter's throughput as ratios to both references, events/s per core with several
workers, and light-load latency (one connection: one request at a time) against the reference.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench import harness, traffic
from billingwatch.fixtures import stripe_events as se
from testkit.processes import RedisServer, free_port

HERE = Path(__file__).resolve().parent


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    cpu_cores: float
    rss_mib: float
    check: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def write_signed(bodies: list[bytes], path: Path) -> None:
    """Sign now: every run starts well inside the 300 s signature tolerance."""
    timestamp = int(time.time())
    with path.open("wb") as out:
        for body in bodies:
            out.write(se.sign(body, harness.SECRET, timestamp=timestamp).encode() + b"\t" + body + b"\n")


def run_wrk(port: int, pids: list[int], bodies_file: Path, limit: int, args: argparse.Namespace,
            connections: int | None = None) -> dict[str, int]:
    env = {**os.environ, "BENCH_BODIES": str(bodies_file), "BENCH_MAX": str(limit)}
    command = ["wrk", "-t1", f"-c{connections or args.connections}", f"-d{args.duration}s", "--timeout", "10s",
               "-s", str(HERE / "post.lua"), f"http://127.0.0.1:{port}"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.duration + 120, check=True)
    match = re.search(r"^WRK (\{.*\})$", out.stdout, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    figures: dict[str, int] = json.loads(match.group(1))
    return figures


def exporter_events_total(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^billingwatch_events_total\{[^}]*\} (\S+)$", text, re.M))


def bench_target(name: str, server_args: list[str], env: dict[str, str], bodies: list[bytes],
                 limit: int, rds: redis.Redis, workdir: Path, args: argparse.Namespace,
                 connections: int | None = None) -> Result:
    rds.flushall()
    port = free_port()
    process = harness.start_server([*server_args, "--port", str(port)], port, env)
    try:
        time.sleep(1.0)  # let every worker finish starting before the clock runs
        pids = harness.process_tree(process.pid)
        bodies_file = workdir / "bodies.txt"
        write_signed(bodies, bodies_file)
        cpu_before = harness.cpu_seconds(pids)
        figures = run_wrk(port, pids, bodies_file, limit, args, connections)
        cpu = harness.cpu_seconds(pids) - cpu_before
        rss = harness.rss_bytes(pids)
        check = ""
        if name.startswith("exporter"):
            # Every answered request was a distinct event, recorded once (events_total is global,
            # read from Redis; the per-replica request counter is not, with several workers).
            events_total = exporter_events_total(port)
            check = f"events_total {events_total:.0f} for {figures['requests']} answered requests"
            if figures["non_2xx"] or not figures["requests"] <= events_total <= len(bodies):
                raise RuntimeError(f"{name}: not every request was a distinct recorded event: {check}")
    finally:
        harness.stop_server(process)
    seconds = figures["duration_us"] / 1e6
    return Result(name, figures["requests"], seconds, figures["non_2xx"], figures["socket_errors"],
                  figures["p50_us"] / 1000, figures["p99_us"] / 1000, cpu / seconds, rss / 2**20, check)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40_000, help="distinct signed events per target (count bound)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per target and round (time bound)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all targets")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", default="auto", help="serve --workers of the multi-worker exporter run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    print(f"machine: {harness.machine()}")
    started = time.monotonic()
    events = traffic.events(args.events)
    bodies = [se.body(e) for e in events]
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e["type"]] = kinds.get(e["type"], 0) + 1
    print(f"load: {len(bodies)} distinct events, mean body {sum(map(len, bodies)) / len(bodies):.0f} B, "
          f"wrk -t1 -c{args.connections} -d{args.duration}s; mix {kinds}")
    print(f"(events built in {time.monotonic() - started:.1f}s)")

    server = RedisServer()  # a throw-away one: no persistence, in a temporary directory
    server.start()
    rds = redis.Redis.from_url(server.url)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    uvicorn = ["-m", "uvicorn", "--factory", "--no-access-log", "--log-level", "warning"]
    exporter_env = {"REDIS_URL": server.url, "STRIPE_WEBHOOK_SECRET": harness.SECRET}
    # The exporter must see each event once: stop before the bodies wrap around (in-flight margin).
    exporter_limit = args.events - 4 * args.connections
    reference = [*uvicorn, "bench.reference:one_round_trip"]
    cores = len(os.sched_getaffinity(0)) if args.workers == "auto" else int(args.workers)
    # (name, server arguments, environment, event limit, wrk connections, index of its reference row)
    targets = [
        ("bare starlette (parse only)", [*uvicorn, "bench.reference:bare"], {}, 10 * args.events, None, None),
        ("starlette + 1 EVALSHA", reference, {"BENCH_REDIS_URL": server.url}, 10 * args.events, None, None),
        ("exporter, 1 worker", ["-m", "billingwatch", "serve"], exporter_env, exporter_limit, None, 1),
        (f"exporter, --workers {args.workers} ({cores})", ["-m", "billingwatch", "serve", "--workers", args.workers],
         exporter_env, exporter_limit, None, 1),
        ("starlette + 1 EVALSHA, 1 connection", reference, {"BENCH_REDIS_URL": server.url}, 10 * args.events, 1,
         None),
        ("exporter, 1 worker, 1 connection", ["-m", "billingwatch", "serve"], exporter_env, exporter_limit, 1, 4),
    ]
    # Rounds interleave the targets, so a neighbour's load on this shared machine hits all of
    # them alike; ratios are taken within a round, then the median over rounds is reported.
    rounds: list[list[Result]] = []
    loads: list[str] = []
    try:
        for number in range(1, args.rounds + 1):
            loads.append(" ".join(Path("/proc/loadavg").read_text().split()[:3]))
            results = []
            for name, server_args, env, limit, connections, _ in targets:
                result = bench_target(name, server_args, env, bodies, limit, rds, workdir, args, connections)
                results.append(result)
                print(f"  round {number}: {name}: {result.rate:.0f}/s", flush=True)
            rounds.append(results)
    finally:
        rds.close()
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"load average before each round: {'; '.join(loads)}")
    print(f"median of {args.rounds} rounds (each row: the round with the median events/s of that target)")
    print("| target | events/s | p50 ms | p99 ms | server CPU (cores) | server RSS MiB | requests | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i in range(len(targets)):
        runs = sorted((r[i] for r in rounds), key=lambda r: r.rate)
        r = runs[len(runs) // 2]
        print(f"| {r.name} | {r.rate:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_cores:.2f} | {r.rss_mib:.0f} | "
              f"{r.requests} | {r.non_2xx + r.socket_errors} |")
    print()
    for i, (name, *_, ref) in enumerate(targets):
        if ref is None:
            continue
        to_ref = sorted(r[i].rate / r[ref].rate for r in rounds)
        p50 = statistics.median(r[i].p50_ms for r in rounds)
        p99 = statistics.median(r[i].p99_ms for r in rounds)
        print(f"{name}: {statistics.median(to_ref):.2f} x {targets[ref][0]} (target >= 1.0; rounds: "
              f"{', '.join(f'{x:.2f}' for x in to_ref)}); median p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    auto = statistics.median(r[3].rate for r in rounds)
    auto_cpu = statistics.median(r[3].cpu_cores for r in rounds)
    print(f"{targets[3][0]}: {auto / cores:.0f} events/s per core of the machine, "
          f"{auto / max(auto_cpu, 1e-9):.0f} per core of server CPU used ({auto_cpu:.2f} cores)")
    for r in rounds[-1]:
        if r.check:
            print(f"  last round check, {r.name}: {r.check}")
    print(f"total bench time {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
