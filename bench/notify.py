"""Webhook to notification: from a duplicate charge's second webhook to Alertmanager's webhook receiver.

    python -m bench.notify [--repeat 5]

The stack of tests/test_e2e_alerting.py (testkit/alerting.py), all real processes on loopback: redis-server,
`billingwatch serve`, Prometheus (scrape and rule evaluation every 1 s, the project's rules with
an 8 s anomaly window), Alertmanager (the repo's config, group_wait 1 s) and an HTTP receiver.
Each repetition posts two same-amount charges of a new customer and times the second POST to the
first firing BillingAnomalyDetected{detector="duplicate_charge"} the receiver gets after it; it
then waits for the alert's resolved notification, so the next repetition starts a new group.
The bound the issue sets: one scrape + one evaluation + group_wait (3 s) over the anchor.
"""

import argparse
import logging
import statistics
import tempfile
import time
import uuid
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import harness
from billingwatch.fixtures import stripe_events as se
from billingwatch.rules import load_config, render_rules
from testkit.alerting import RULES_OVERRIDE, alertmanager_config, authenticating_smtp_sink, firing, resolved
from testkit.processes import RedisServer, running_exporter, wait_until
from testkit.stack import HttpSink, alertmanager, http_sink, prometheus

SECRET = "whsec_bench_notify"
BOUND = 3.0  # scrape 1 s + evaluation 1 s + group_wait 1 s


def first_after(sink: HttpSink, since: float, predicate: Any, timeout: float) -> float:
    """Arrival time of the first POST to /webhook after `since` that matches."""
    found: list[float] = []

    def check() -> bool:
        with sink._lock:
            found[:] = [t for t, path, body in sink.requests if path == "/webhook" and t > since and predicate(body)]
        return bool(found)

    wait_until(check, timeout, what="a notification")
    return found[0]


def post(url: str, event: dict[str, Any]) -> None:
    payload = se.body(event)
    response = httpx.post(url + "/webhooks/stripe", content=payload, headers=se.signed_headers(payload, SECRET))
    response.raise_for_status()


def main() -> None:
    # The SMTP sink (Alertmanager's email receiver needs one) is loopback-only: no TLS, no noise.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(harness.machine())
    directory = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    override = directory / "rules-override.yml"
    override.write_text(yaml.safe_dump(RULES_OVERRIDE))
    rules = directory / "billingwatch.rules.yml"
    rules.write_text(render_rules(load_config(str(override))))
    latencies: list[float] = []
    with ExitStack() as stack:
        redis = RedisServer()
        redis.start()
        stack.callback(redis.close)
        exporter = stack.enter_context(running_exporter(
            SECRET, REDIS_URL=redis.url, BILLINGWATCH_REDIS_PREFIX="notify" + uuid.uuid4().hex[:8]))
        smtp = stack.enter_context(authenticating_smtp_sink())
        receiver = stack.enter_context(http_sink())
        (directory / "amconfig").mkdir()
        am = stack.enter_context(alertmanager(directory / "am", alertmanager_config(
            directory / "amconfig", smtp, receiver, exporter.url)))
        prom = stack.enter_context(prometheus(
            directory / "prom", [f"127.0.0.1:{exporter.port}"], [rules], alertmanager=am.address))
        series = 'billingwatch_anomalies_total{detector="duplicate_charge",livemode="false"}'
        prom.wait_for(f"count_over_time({series}[1m]) >= 2", timeout=60)  # increase() needs the 0 first
        for number in range(1, args.repeat + 1):
            customer = f"cus_notify{number}_{uuid.uuid4().hex[:6]}"
            post(exporter.url, se.event("charge.succeeded", se.charge(customer=customer)))
            posted = time.time()
            post(exporter.url, se.event("charge.succeeded", se.charge(customer=customer)))
            arrived = first_after(receiver, posted, firing("duplicate_charge"), timeout=60)
            latencies.append(arrived - posted)
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(f"  {number}: second webhook to notification {arrived - posted:.2f} s (load {load})", flush=True)
            first_after(receiver, arrived, resolved("duplicate_charge"), timeout=60)
    print(f"median {statistics.median(latencies):.2f} s, min {min(latencies):.2f} s, max {max(latencies):.2f} s "
          f"over {len(latencies)}; bound: the anchor (about 2.3 s) + {BOUND:.0f} s")
    print(f"load average after the run {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
