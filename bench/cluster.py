"""How the load spreads over a Redis Cluster: per-master keys, script calls and memory.

    python -m bench.cluster [--events 4000] [--redeliver 0.2] [--masters 3]

Starts a real 3-master cluster on loopback and two exporters naming it through different
nodes (redis+cluster://), sends distinct signed events (bench/traffic.py) plus a share of
redeliveries from 4 threads, then reads INFO keyspace / commandstats / memory from every
master. All BillingWatch keys carry one hash tag, so one master should hold them all.
"""

import argparse
import random
import threading

import httpx
import redis

from bench import traffic
from billingwatch.fixtures import stripe_events as se
from testkit.processes import RedisClusterServers, running_exporter

SECRET = "whsec_bench_cluster"


def send(url: str, bodies: list[bytes], statuses: dict[int, int], lock: threading.Lock) -> None:
    with httpx.Client(timeout=10) as client:
        for body in bodies:
            while True:  # retry every non-2xx, as Stripe does
                status = client.post(url + "/webhooks/stripe", content=body,
                                     headers=se.signed_headers(body, SECRET)).status_code
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    break


def node_figures(port: int) -> dict[str, int]:
    r = redis.Redis(port=port)
    keyspace, stats, memory = r.info("keyspace"), r.info("commandstats"), r.info("memory")
    r.close()
    return {
        "keys": int(keyspace.get("db0", {}).get("keys", 0)),
        "evalsha": int(stats.get("cmdstat_evalsha", {}).get("calls", 0)),
        "commands": sum(int(v["calls"]) for v in stats.values()),
        "used_memory": int(memory["used_memory"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--redeliver", type=float, default=0.2, help="share of events delivered a second time")
    parser.add_argument("--masters", type=int, default=3)
    args = parser.parse_args()

    events = traffic.events(args.events)
    bodies = [se.body(e) for e in events]
    rng = random.Random(3)
    bodies += rng.sample(bodies, int(len(bodies) * args.redeliver))
    rng.shuffle(bodies)

    cluster = RedisClusterServers(args.masters)
    cluster.start()
    try:
        slot = int(cluster.cli(cluster.ports[0], "cluster", "keyslot", "{billingwatch}"))
        owner = cluster.owner(slot)
        other = next(p for p in cluster.ports if p != owner)
        baseline = {p: node_figures(p) for p in cluster.ports}
        statuses: dict[int, int] = {}
        lock = threading.Lock()
        with (running_exporter(SECRET, REDIS_URL=cluster.url(owner)) as one,
              running_exporter(SECRET, REDIS_URL=cluster.url(other)) as two):
            urls = [one.url, two.url, one.url, two.url]
            threads = [threading.Thread(target=send, args=(url, bodies[i::len(urls)], statuses, lock))
                       for i, url in enumerate(urls)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        after = {p: node_figures(p) for p in cluster.ports}
    finally:
        cluster.close()

    print(f"{len(events)} distinct events + {len(bodies) - len(events)} redeliveries, "
          f"through 2 exporters on different nodes; answers: {dict(sorted(statuses.items()))}")
    print(f"hash tag {{billingwatch}} -> slot {slot}, owned by 127.0.0.1:{owner}")
    print("| master | owns the slot | keys | share of keys | EVALSHA calls | share of EVALSHA "
          "| all commands | used_memory delta MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    delta = {p: {k: after[p][k] - baseline[p][k] for k in after[p]} for p in after}
    keys_total = sum(d["keys"] for d in delta.values()) or 1
    eval_total = sum(d["evalsha"] for d in delta.values()) or 1
    for port, d in delta.items():
        print(f"| 127.0.0.1:{port} | {'yes' if port == owner else 'no'} | {d['keys']} "
              f"| {100 * d['keys'] / keys_total:.1f} % | {d['evalsha']} | {100 * d['evalsha'] / eval_total:.1f} % "
              f"| {d['commands']} | {d['used_memory'] / 2**20:.2f} |")


if __name__ == "__main__":
    main()
