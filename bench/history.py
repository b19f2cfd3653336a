"""History benchmark: `billingwatch replay --direct` and `replay` over HTTP against their targets.

    python -m bench.history [--events 20000] [--concurrency 1,2,4] [--batch-size 500] [--repeat 3] [--only direct|http]

Writes --events distinct Stripe events (bench/traffic.py) to a JSON Lines file, starts a fresh
redis-server and one exporter (`billingwatch serve`, 1 worker, REDIS_URL set) per target, each
with its own key prefix, then runs the command as a user does, in its own process:
`replay --direct FILE` into the store (one apply_batch.lua call per batch), and `replay --url
EXPORTER FILE` over HTTP (NDJSON chunks of --batch-size events to POST /api/import, --concurrency
of them in flight); --direct also one event at a time (--batch-size 1). Each run is
timed from the command's start to its exit; the command's start-up (interpreter, imports, an
empty file) is timed apart and taken off, since it does not grow with the events. Each run is
then checked: the summary line, and billingwatch_history_events_total on the exporter's /metrics
equal to the events. A second --direct run of the same file (all duplicates) is timed too.
Every run is repeated --repeat times (each with its own prefix); the table gives the median, with
the load average before each repetition.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis as sync_redis

from bench import harness, traffic
from testkit.processes import RedisServer, running_exporter

TARGETS = {"direct": 20_000.0, "http": 5_000.0}  # events/s, issues 15 and 27


@dataclass
class Run:
    name: str
    seconds: float  # wall time of the command
    startup: float  # the same command on an empty file
    summary: str
    check: str

    def rate(self, events: int) -> float:
        return events / max(self.seconds - self.startup, 1e-9)


def command(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run `python -m billingwatch ARGS`; its wall time and last stdout line (the summary)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    full_env.update({"PYTHONPATH": str(harness.ROOT), "STRIPE_WEBHOOK_SECRET": harness.SECRET, **env})
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "billingwatch", *args], env=full_env, capture_output=True,
                          text=True, timeout=3600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"billingwatch {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout.strip().splitlines()[-1]


def history_events(url: str) -> int:
    text = httpx.get(url + "/metrics", timeout=30).text
    return round(sum(float(m.group(1)) for m in re.finditer(
        r"^billingwatch_history_events_total\{[^}]*\} (\S+)$", text, re.MULTILINE)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", default="1,2,4", help="comma-separated HTTP concurrencies (requests)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["direct", "http"])
    args = parser.parse_args()

    print(harness.machine())
    work = Path(tempfile.mkdtemp(prefix="billingwatch-bench-history-"))
    events_file, empty = work / "events.jsonl", work / "empty.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in traffic.events(args.events)))
    empty.write_text("")
    size = events_file.stat().st_size
    print(f"{args.events} events, {size / args.events / 1024:.1f} KiB mean line, {size / 2**20:.0f} MiB file")

    redis = RedisServer(work / "redis")
    (work / "redis").mkdir()
    redis.start()
    server = sync_redis.Redis.from_url(redis.url)
    runs: dict[str, list[Run]] = {}
    loads: list[str] = []
    try:
        plans = []  # (name, sink arguments): the batch-1 and concurrency-1 rows are the old way
        if args.only != "http":
            plans += [("direct", ["--direct", "--batch-size", str(args.batch_size)]),
                      ("direct again", ["--direct", "--batch-size", str(args.batch_size)]),
                      ("direct, batch 1", ["--direct", "--batch-size", "1"])]
        if args.only != "direct":
            plans += [(f"http, concurrency {c}", ["--concurrency", c, "--batch-size", str(args.batch_size)])
                      for c in args.concurrency.split(",")]
        for repetition in range(args.repeat):
            loads.append(" ".join(Path("/proc/loadavg").read_text().split()[:3]))
            for name, sink in plans:
                # "direct again" replays into the prefix "direct" just filled: all duplicates.
                prefix = f"bench{repetition}_" + ("direct" if name.startswith("direct") and
                                                   not name.endswith("1") else re.sub(r"\W", "", name))
                env = {"REDIS_URL": redis.url, "BILLINGWATCH_REDIS_PREFIX": prefix}
                with running_exporter(harness.SECRET, **env) as exporter:
                    if name.startswith("http"):
                        sink = ["--url", exporter.url, *sink]
                    startup, _ = command(["replay", *sink, str(empty)], env)
                    server.config_resetstat()
                    seconds, summary = command(["replay", *sink, str(events_file)], env)
                    calls = server.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
                    recorded = history_events(exporter.url)
                check = f"billingwatch_history_events_total {recorded} for {args.events} events"
                if recorded != args.events:
                    check += "  MISMATCH"
                runs.setdefault(name, []).append(Run(name, seconds, startup, summary, check))
                rate = args.events / (seconds - startup)
                # Redis's own time in the apply script: one Redis runs at most 10^6 / this events/s.
                per_call = calls["usec"] / max(calls["calls"], 1)
                print(f"  {repetition + 1}: replay {name}: {rate:.0f} events/s; Redis: {calls['calls']} script "
                      f"calls, {per_call:.0f} us each (INFO commandstats)", flush=True)
    finally:
        redis.close()
        shutil.rmtree(work, ignore_errors=True)

    print(f"load average before each repetition: {'; '.join(loads)}")
    print(f"median of {args.repeat} (events/s of each repetition in brackets)")
    print("| run | events/s | command s | start-up s | summary |")
    print("|---|---:|---:|---:|---|")
    medians: dict[str, Run] = {}
    for name, repeated in runs.items():
        ordered = sorted(repeated, key=lambda r: r.rate(args.events))
        medians[name] = run = ordered[len(ordered) // 2]
        each = ", ".join(f"{r.rate(args.events):.0f}" for r in repeated)
        print(f"| replay {name} | {run.rate(args.events):.0f} ({each}) | {run.seconds:.2f} | {run.startup:.2f} "
              f"| {run.summary} |")
    print()
    for name, run in medians.items():
        target = TARGETS["http" if name.startswith("http") else "direct"]
        rate = statistics.median(r.rate(args.events) for r in runs[name])
        print(f"replay {name}: {rate:.0f} events/s = {rate / target:.2f} x the target {target:.0f}/s; {run.check}")
    print(f"load average after the run {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
