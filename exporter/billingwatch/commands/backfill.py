"""`billingwatch backfill --since 30d`: seed today's subscriptions, then record the events Stripe's
API still holds.

Lists every subscription (Subscriptions API) and records each as a history snapshot, so MRR and
the subscription gauges are right on day one, even for subscriptions with no event in 30 days;
then reads the Events API. Both go through the same path as `replay`; what was already recorded
comes back as duplicates, so a backfill can be repeated.
"""

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from billingwatch.commands.feed import Sink, Tally, add_sink_arguments, feed, open_sink
from billingwatch.commands.stripe_api import (
    StripeApiError,
    add_api_arguments,
    client_from,
    duration,
    event_types,
    list_events,
    list_subscriptions,
)

SEED_PREFIX = "seed_"  # Stripe's event ids start with evt_: a seed's id can never be one of them
SEED_TYPE = "customer.subscription.updated"
ENDED = ("canceled", "incomplete_expired")  # terminal: no later snapshot of the subscription can differ


def add_backfill(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser(
        "backfill", help="seed subscriptions and record past events from Stripe's API (Stripe keeps events 30 days)",
        description="Seed the current subscriptions from Stripe's Subscriptions API, then read events from "
        "its Events API (STRIPE_API_KEY: a restricted key with read access to Events and Subscriptions "
        "only), and feed both to the exporter like `replay`, as history. Stripe keeps events for 30 days, "
        "so --since is at most 30d. What was already recorded changes no count.",
    )
    parser.add_argument("--since", type=duration, default=duration("30d"),
                        help="how far back: 30d (the default and Stripe's maximum), 24h, 90m, ...")
    parser.add_argument("--no-subscriptions", dest="subscriptions", action="store_false",
                        help="do not seed the current subscriptions (then the key needs Events read only)")
    add_api_arguments(parser)
    add_sink_arguments(parser)
    parser.set_defaults(run=backfill)


def seed_event(subscription: dict[str, Any], listed_at: int) -> dict[str, Any]:
    """A subscription as listed, wrapped as a synthetic customer.subscription.updated event created
    at `listed_at`: the store keeps it unless an event at least as new says otherwise.

    Its id names the subscription and a digest of its content, so seeding an unchanged
    subscription again is a duplicate (changes nothing), while a changed one is a new snapshot.
    """
    content = json.dumps(subscription, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(content.encode()).hexdigest()[:16]
    return {
        "id": f"{SEED_PREFIX}{subscription.get('id')}_{digest}",
        "object": "event",
        "type": SEED_TYPE,
        "created": listed_at,
        "livemode": subscription.get("livemode"),
        "api_version": None,
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": subscription},
    }


@dataclass
class Seeding:
    listed: int = 0
    ended: int = 0

    def summary(self, tally: Tally) -> str:
        c = tally.counts
        return (f"subscriptions seeded: {self.listed} listed ({self.ended} ended): {c['accepted']} recorded, "
                f"{c['duplicate']} unchanged since the last seed, {c['rejected']} rejected, {c['failed']} failed")


async def seed(client: Any, sink: Sink) -> tuple[Seeding, Tally]:
    seeding = Seeding()

    async def items() -> AsyncIterator[tuple[str, Any]]:
        async for listed_at, subscription in list_subscriptions(client):
            seeding.listed += 1
            seeding.ended += subscription.get("status") in ENDED
            yield str(subscription.get("id")), seed_event(subscription, listed_at)

    tally = await feed(items(), sink, "subscriptions")
    return seeding, tally


def backfill(args: argparse.Namespace) -> int:
    client, types = client_from(args), event_types(args)
    sink = open_sink(args)

    async def items() -> AsyncIterator[tuple[str, Any]]:
        async for document in list_events(client, args.since, types):
            yield str(document.get("id")), document

    async def run() -> int:
        ok = True
        try:
            # Subscriptions first: a key without Subscriptions read fails on the first page, before
            # anything is recorded. The order does not decide which snapshot wins (event time does).
            if args.subscriptions:
                seeding, seeded = await seed(client, sink)
                print(seeding.summary(seeded))
                ok = seeded.ok
            tally = await feed(items(), sink, "backfill", show_progress=args.progress)
        except StripeApiError as exc:
            print(f"billingwatch: {exc}", file=sys.stderr)
            return 1
        finally:
            await sink.close()
        print(tally.summary("backfill"))
        return 0 if ok and tally.ok else 1

    return asyncio.run(run())
