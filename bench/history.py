"""History benchmark: `billingwatch replay --direct` and `replay` over HTTP against their targets.

    python -m bench.history [--events 20000] [--concurrency 16] [--batch-size 500]

Writes --events distinct Stripe events (bench/traffic.py) to a JSON Lines file, starts a fresh
redis-server and one exporter (`billingwatch serve`, 1 worker, REDIS_URL set) per target, each
with its own key prefix, then runs the command as a user does, in its own process:
`replay --direct FILE` into the store, and `replay --url EXPORTER FILE` over HTTP, each also one
event at a time (--batch-size 1, --concurrency 1: how they ran before issue 15). Each run is
timed from the command's start to its exit; the command's start-up (interpreter, imports, an
empty file) is timed apart and taken off, since it does not grow with the events. Each run is
then checked: the summary line, and billingwatch_history_events_total on the exporter's /metrics
equal to the events. A second --direct run of the same file (all duplicates) is timed too.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import harness, traffic
from billingwatch.testing.processes import RedisServer, running_exporter

TARGETS = {"direct": 20_000.0, "http": 2_000.0}  # events/s, issue 15


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
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=500)
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
    runs: list[Run] = []
    try:
        plans = [  # (name, key prefix, sink arguments): the batch-1 and concurrency-1 rows are today's way
            ("direct", "bench_direct", ["--direct", "--batch-size", str(args.batch_size)]),
            ("direct again", "bench_direct", ["--direct", "--batch-size", str(args.batch_size)]),
            ("direct, batch 1", "bench_direct1", ["--direct", "--batch-size", "1"]),
            ("http", "bench_http", ["--concurrency", str(args.concurrency)]),
            ("http, concurrency 1", "bench_http1", ["--concurrency", "1"]),
        ]
        for name, prefix, sink in plans:
            env = {"REDIS_URL": redis.url, "BILLINGWATCH_REDIS_PREFIX": prefix}
            with running_exporter(harness.SECRET, **env) as exporter:
                if name.startswith("http"):
                    sink = ["--url", exporter.url, *sink]
                startup, _ = command(["replay", *sink, str(empty)], env)
                seconds, summary = command(["replay", *sink, str(events_file)], env)
                recorded = history_events(exporter.url)
                check = f"billingwatch_history_events_total {recorded} for {args.events} events"
                if recorded != args.events:
                    check += "  MISMATCH"
                runs.append(Run(name, seconds, startup, summary, check))
    finally:
        redis.close()
        shutil.rmtree(work, ignore_errors=True)

    print("| run | events/s | command s | start-up s | summary |")
    print("|---|---:|---:|---:|---|")
    for run in runs:
        print(f"| replay {run.name} | {run.rate(args.events):.0f} | {run.seconds:.2f} | {run.startup:.2f} "
              f"| {run.summary} |")
    print()
    for run in runs:
        target = TARGETS["http" if run.name.startswith("http") else "direct"]
        print(f"replay {run.name}: {run.rate(args.events):.0f} events/s = {run.rate(args.events) / target:.2f} x "
              f"the target {target:.0f}/s; {run.check}")
    print(f"load average after the run {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
