"""`billingwatch simulate`: realistic signed Stripe traffic for demos and load tests.

Sends test-mode events to a running exporter at a steady rate, bounded in count and time,
optionally with injected anomalies (--inject), each sent once, halfway through the run.
"""

import argparse
import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from billingwatch.commands.feed import DEFAULT_URL, WebhookSink, feed, webhook_url
from billingwatch.commands.traffic import INJECTIONS, Traffic, stream
from billingwatch.config import ConfigError, from_env

MAX_RATE = 1000.0
MAX_COUNT = 1_000_000
MAX_DURATION = 24 * 3600
DEFAULT_COUNT = 600


def injections(text: str) -> list[str]:
    names = list(INJECTIONS) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in INJECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown anomaly {', '.join(unknown)}; known: {', '.join(INJECTIONS)}")
    return names


def add_simulate(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser(
        "simulate", help="send realistic signed Stripe test traffic, optionally with anomalies",
        description="Send a SaaS business's Stripe events (sign-ups, renewals, declines with real decline "
        "codes, recoveries, cancellations, refunds, disputes, early fraud warnings), signed with "
        "STRIPE_WEBHOOK_SECRET, to a running exporter. Test mode only. Without --inject it trips no "
        "detector. Stops after --count events or --duration seconds, whichever comes first.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the exporter's webhook endpoint (default {DEFAULT_URL})")
    parser.add_argument("--rate", type=float, default=10.0,
                        help=f"events per second (default 10, at most {MAX_RATE:g})")
    parser.add_argument("--count", type=int, help=f"events of normal traffic (default {DEFAULT_COUNT}, or rate "
                        f"times duration with --duration; at most {MAX_COUNT})")
    parser.add_argument("--duration", type=float, help=f"seconds to run (at most {MAX_DURATION})")
    parser.add_argument("--inject", type=injections, default=[], metavar="NAME,...",
                        help=f"anomalies to inject once, halfway: {', '.join(INJECTIONS)}, or all")
    parser.add_argument("--seed", type=int, help="random seed, for the same traffic mix again (ids stay unique)")
    parser.add_argument("--retries", type=int, default=5, help="retries of one event on 5xx (default 5)")
    parser.set_defaults(run=simulate)


def limits(args: argparse.Namespace) -> tuple[int, float | None]:
    if not 0 < args.rate <= MAX_RATE:
        raise ConfigError(f"--rate must be above 0 and at most {MAX_RATE:g}")
    if args.duration is not None and not 0 < args.duration <= MAX_DURATION:
        raise ConfigError(f"--duration must be above 0 and at most {MAX_DURATION}")
    if args.count is None:
        count = int(args.rate * args.duration) if args.duration is not None else DEFAULT_COUNT
    else:
        count = args.count
    if not 0 <= count <= MAX_COUNT:
        raise ConfigError(f"--count must be between 0 and {MAX_COUNT}")
    return count, args.duration


async def paced(events: Any, rate: float, duration: float | None) -> AsyncIterator[tuple[str, Any]]:
    start = time.monotonic()
    for sent, event in enumerate(events):
        elapsed = time.monotonic() - start
        if duration is not None and elapsed >= duration:
            return
        delay = sent / rate - elapsed
        if delay > 0:
            await asyncio.sleep(delay)
        yield str(event["id"]), event


def simulate(args: argparse.Namespace) -> int:
    count, duration = limits(args)
    secrets = from_env().webhook_secrets
    if not secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRET is not set: give the exporter's signing secret (whsec_...)")
    sink = WebhookSink(webhook_url(args.url), secrets[0], args.retries)
    traffic = Traffic(random.Random(args.seed))

    async def run() -> int:
        try:
            tally = await feed(paced(stream(traffic, count, args.inject), args.rate, duration), sink, "simulate")
        finally:
            await sink.close()
        injected = f" (injected: {', '.join(args.inject)})" if args.inject else ""
        print(tally.summary("simulate") + injected)
        return 0 if tally.ok else 1

    return asyncio.run(run())
