"""History throughput against the release at commit 886d805, in the same run (issue 27).

    python -m bench.replay_release [--events 20000] [--repeat 3] [--batch-size 500] [--release 886d805]

Writes --events distinct Stripe events (bench/traffic.py, the traffic mix) to one JSON Lines
file; installs the release at --release from this repository's history into a temporary venv
(testkit/release.py); starts one fresh redis-server; then, each repetition, each on a key
prefix of its own and run as a user runs it, in its own process:
- `replay --direct FILE` of the release,
- `replay --direct FILE` of this checkout,
- `replay --url EXPORTER FILE` of this checkout: over HTTP, through POST /api/import of a
  `billingwatch serve` (1 worker, REDIS_URL set).
Each command is timed from its start to its exit, less the same command on an empty file (the
interpreter and imports, which do not grow with the events). Each run is checked: its summary
line must say every event was accepted. Prints each repetition, then the medians and the ratios
of this checkout to the release, and of the HTTP path to its target (5,000 events/s).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from bench import harness, traffic
from testkit.processes import RedisServer, running_exporter
from testkit.release import install

HTTP_TARGET = 5_000.0  # events/s through /api/import, issue 27
RELEASE_RATIO_TARGET = 5.0  # replay --direct, this checkout / the release at 886d805


class Side(NamedTuple):
    python: str
    cwd: Path  # the release runs outside the checkout, so its own code is imported
    env: dict[str, str]


def timed(python: str, args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    """Run `python -m billingwatch ARGS`; its wall time and last stdout line (the summary)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    full_env.update({"STRIPE_WEBHOOK_SECRET": harness.SECRET, **env})
    start = time.perf_counter()
    done = subprocess.run([python, "-m", "billingwatch", *args], env=full_env, capture_output=True, text=True,
                          timeout=3600, cwd=cwd)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{python} -m billingwatch {' '.join(args)} failed ({done.returncode}): "
                         f"{done.stderr[-2000:]}")
    return seconds, done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--release", default="886d805")
    args = parser.parse_args()

    print(harness.machine())
    work = Path(tempfile.mkdtemp(prefix="billingwatch-bench-release-"))
    events_file, empty = work / "events.jsonl", work / "empty.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in traffic.events(args.events)))
    empty.write_text("")
    size = events_file.stat().st_size
    print(f"{args.events} events, {size / args.events / 1024:.1f} KiB mean line, {size / 2**20:.0f} MiB file")
    (work / "release").mkdir()
    release_python = str(install(args.release, work / "release"))
    current = Side(sys.executable, harness.ROOT, {"PYTHONPATH": str(harness.ROOT)})
    released = Side(release_python, work, {})

    redis = RedisServer(work / "redis")
    (work / "redis").mkdir()
    redis.start()
    rates: dict[str, list[float]] = {}
    batch = ["--batch-size", str(args.batch_size)]
    try:
        for repetition in range(args.repeat):
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            for name, side, sink in (
                (f"release {args.release}, replay --direct", released, ["--direct", *batch]),
                ("this checkout, replay --direct", current, ["--direct", *batch]),
                ("this checkout, replay over HTTP (/api/import)", current, None),
            ):
                prefix = f"rel{repetition}_{len(rates.get(name, []))}_{abs(hash(name)) % 10_000}"
                env = {**side.env, "REDIS_URL": redis.url, "BILLINGWATCH_REDIS_PREFIX": prefix}
                python, cwd = side.python, side.cwd
                if sink is None:
                    with running_exporter(harness.SECRET, **env) as exporter:
                        sink_args = ["--url", exporter.url, *batch]
                        startup, _ = timed(python, ["replay", *sink_args, str(empty)], env, cwd)
                        seconds, summary = timed(python, ["replay", *sink_args, str(events_file)], env, cwd)
                else:
                    startup, _ = timed(python, ["replay", *sink, str(empty)], env, cwd)
                    seconds, summary = timed(python, ["replay", *sink, str(events_file)], env, cwd)
                if f"{args.events} accepted" not in summary:
                    raise SystemExit(f"{name}: not every event recorded: {summary}")
                rate = args.events / max(seconds - startup, 1e-9)
                rates.setdefault(name, []).append(rate)
                print(f"  {repetition + 1} (load {load}): {name}: {rate:.0f} events/s "
                      f"({seconds:.2f} s less {startup:.2f} s start-up)", flush=True)
    finally:
        redis.close()
        shutil.rmtree(work, ignore_errors=True)

    print(f"median of {args.repeat} (each repetition in brackets)")
    print("| run | events/s |")
    print("|---|---:|")
    medians = {name: statistics.median(each) for name, each in rates.items()}
    for name, each in rates.items():
        print(f"| {name} | {medians[name]:.0f} ({', '.join(f'{r:.0f}' for r in each)}) |")
    names = list(rates)
    direct_ratio = medians[names[1]] / medians[names[0]]
    print(f"replay --direct: this checkout / release {args.release} = {direct_ratio:.2f} x "
          f"(target >= {RELEASE_RATIO_TARGET:.0f} x)")
    print(f"replay over HTTP through /api/import: {medians[names[2]]:.0f} events/s = "
          f"{medians[names[2]] / HTTP_TARGET:.2f} x the target {HTTP_TARGET:.0f}/s; "
          f"{medians[names[2]] / medians[names[0]]:.2f} x the release's replay --direct")
    print(f"load average after the run {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
