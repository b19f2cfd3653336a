"""Ingest throughput with pushed alerts on against off (issue 18: within 5 %).

    python -m bench.push [--events 20000] [--duration 5] [--rounds 3] [--connections 16] [--duplicates 0.05]

bench/ingest.py's harness (wrk, bench/post.lua, a fresh redis-server flushed per target), one
exporter worker. The load is bench/traffic.py's mix with a share of its charges repeated for
the same customer and amount, so those events are duplicate_charge anomalies that the
exporter pushes. With pushing on, BILLINGWATCH_ALERTMANAGER_URLS points at a tiny local HTTP
receiver standing in for Alertmanager (it counts the alerts). Targets alternate within each
round; the ratio is taken per round, the median reported.
"""

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

from bench import harness, traffic
from bench.ingest import bench_target
from billingwatch.fixtures import stripe_events as se
from testkit.processes import RedisServer


class Receiver:
    """Alertmanager's POST /api/v2/alerts, answered 200 at once; counts the alerts."""

    def __init__(self) -> None:
        self.alerts = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
                with lock:
                    receiver.alerts += len(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def with_duplicates(events: list[dict[str, Any]], share: float) -> tuple[list[dict[str, Any]], int]:
    """Each of the first `share` of the charge.succeeded events is followed by a second charge of the
    same customer, amount and currency (a new charge and event id): one duplicate_charge each."""
    charges = [e for e in events if e["type"] == "charge.succeeded"]
    repeat = {id(e) for e in charges[: int(len(events) * share)]}
    out: list[dict[str, Any]] = []
    for n, event in enumerate(events):
        out.append(event)
        if id(event) in repeat:
            c = event["data"]["object"]
            again = se.charge(amount=c["amount"], currency=c["currency"], customer=c["customer"],
                              charge_id=f"ch_dup{n:08d}", created=event["created"])
            out.append(se.event("charge.succeeded", again, created=event["created"], event_id=f"evt_dup{n:08d}"))
    return out, len(repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of events that are a duplicate charge")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    print(f"machine: {harness.machine()}")
    events, duplicates = with_duplicates(traffic.events(args.events), args.duplicates)
    bodies = [se.body(e) for e in events]
    args.events = len(bodies)
    print(f"load: {len(bodies)} distinct events of which {duplicates} duplicate charges, "
          f"wrk -t1 -c{args.connections} -d{args.duration}s")

    server = RedisServer()
    server.start()
    rds = redis.Redis.from_url(server.url)
    receiver = Receiver()
    workdir = Path(tempfile.mkdtemp(prefix="bench-push-"))
    base = {"REDIS_URL": server.url, "STRIPE_WEBHOOK_SECRET": harness.SECRET}
    targets = [("exporter, push off", base),
               ("exporter, push on", {**base, "BILLINGWATCH_ALERTMANAGER_URLS": receiver.url})]
    limit = len(bodies) - 4 * args.connections
    ratios = []
    try:
        for number in range(1, args.rounds + 1):
            rates = {}
            for name, env in targets:
                before = receiver.alerts
                result = bench_target(name, ["-m", "billingwatch", "serve"], env, bodies, limit, rds, workdir, args)
                rates[name] = result.rate
                print(f"  round {number}: {name}: {result.rate:.0f}/s, p50 {result.p50_ms:.2f} ms, "
                      f"p99 {result.p99_ms:.2f} ms, {result.requests} requests, "
                      f"{receiver.alerts - before} alerts pushed", flush=True)
            ratios.append(rates["exporter, push on"] / rates["exporter, push off"])
    finally:
        receiver.server.shutdown()
        rds.close()
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"push on / push off: median {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; target >= 0.95)")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"total bench time {time.monotonic() - started:.0f}s")
