"""`billingwatch backfill --since 30d`: record the events Stripe's API still holds.

Reads the Events API with the stripe SDK and feeds every event through the same path as
`replay`; events already recorded come back as duplicates, so a backfill can be repeated.
"""

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

from billingwatch.commands.feed import add_sink_arguments, feed, open_sink
from billingwatch.commands.stripe_api import (
    StripeApiError,
    add_api_arguments,
    client_from,
    duration,
    event_types,
    list_events,
)


def add_backfill(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser(
        "backfill", help="record past events read from Stripe's Events API (Stripe keeps 30 days)",
        description="Read events from Stripe's Events API (STRIPE_API_KEY: a restricted key with read "
        "access to Events only) and feed them to the exporter like `replay`. Stripe keeps events for "
        "30 days, so --since is at most 30d. Events already recorded change no count.",
    )
    parser.add_argument("--since", type=duration, default=duration("30d"),
                        help="how far back: 30d (the default and Stripe's maximum), 24h, 90m, ...")
    add_api_arguments(parser)
    add_sink_arguments(parser)
    parser.set_defaults(run=backfill)


def backfill(args: argparse.Namespace) -> int:
    client, types = client_from(args), event_types(args)
    sink = open_sink(args)

    async def items() -> AsyncIterator[tuple[str, Any]]:
        async for document in list_events(client, args.since, types):
            yield str(document.get("id")), document

    async def run() -> int:
        try:
            tally = await feed(items(), sink, "backfill", show_progress=args.progress)
        except StripeApiError as exc:
            print(f"billingwatch: {exc}", file=sys.stderr)
            return 1
        finally:
            await sink.close()
        print(tally.summary("backfill"))
        return 0 if tally.ok else 1

    return asyncio.run(run())
