"""`billingwatch reconcile --since 24h`: find the events whose webhooks never arrived.

Lists the event ids Stripe's API reports, asks the store which it recorded, and reports the
rest. Each missed event is counted once in billingwatch_missed_events_total, however often
reconcile runs: the count is recorded as its own idempotent store entry ("missed:<event id>",
kept as long as event ids are), in the same atomic step as the increment. --replay records
the missed events through the webhook's path.
"""

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from billingwatch.commands.account_option import add_account_argument
from billingwatch.commands.feed import StoreSink, Tally, open_recorder, progress, report
from billingwatch.commands.stripe_api import (
    StripeApiError,
    add_api_arguments,
    client_from,
    duration,
    event_types,
    list_events,
)
from billingwatch.metrics.labels import livemode_label
from billingwatch.recording.recorder import Recorder
from billingwatch.store import StoreUnavailable

BATCH = 100  # ids asked of the store at once (one pipeline round trip)


def add_reconcile(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser(
        "reconcile", help="find (and with --replay record) events Stripe sent that never arrived",
        description="Compare the events Stripe's Events API lists (STRIPE_API_KEY: a restricted key with "
        "Events read) with those recorded in the store (REDIS_URL), report the missing ones and count "
        "each once in billingwatch_missed_events_total. Stripe keeps events for 30 days. Exit status "
        "0 when nothing is missing (or --replay recorded it all), 1 otherwise.",
    )
    parser.add_argument("--since", type=duration, default=duration("24h"),
                        help="how far back to look: 24h (default), 7d, ... at most 30d")
    parser.add_argument("--grace", type=duration, default=duration("10m"),
                        help="skip events younger than this: their webhook may still be on its way (default 10m)")
    parser.add_argument("--replay", action="store_true", help="record the missed events into the store")
    parser.add_argument("--retries", type=int, default=5, help="retries of an unreachable store (default 5)")
    add_api_arguments(parser)
    add_account_argument(parser)
    parser.set_defaults(run=reconcile)


@dataclass
class Findings:
    listed: int = 0
    missed: list[dict[str, Any]] = field(default_factory=list)
    newly_counted: int = 0


async def find_missed(recorder: Recorder, events: Any) -> Findings:
    findings = Findings()
    batch: list[dict[str, Any]] = []

    async def check(batch: list[dict[str, Any]]) -> None:
        recorded = await recorder.store.recorded(
            [(str(d["id"]), livemode_label(d.get("livemode") is True)) for d in batch]
        )
        for document, seen in zip(batch, recorded, strict=True):
            if not seen:
                findings.missed.append(document)
                outcome = await recorder.record_missed(str(document["id"]), document.get("livemode") is True)
                findings.newly_counted += not outcome.duplicate

    with progress(None, "reconcile") as bar:
        async for document in events:
            if not isinstance(document.get("id"), str):
                continue
            findings.listed += 1
            batch.append(document)
            bar.update(1)
            if len(batch) == BATCH:
                await check(batch)
                batch = []
        if batch:
            await check(batch)
    return findings


def describe(document: dict[str, Any]) -> str:
    created = document.get("created")
    when = datetime.fromtimestamp(created, UTC).isoformat() if isinstance(created, int) else "?"
    return f"missed {document['id']} {document.get('type')} created {when}"


def reconcile(args: argparse.Namespace) -> int:
    client, types = client_from(args), event_types(args)
    recorder = open_recorder(args.account)

    async def run() -> int:
        try:
            until = recorder.clock() - args.grace
            findings = await find_missed(recorder, list_events(client, args.since, types, until=until))
            for document in findings.missed:
                print(describe(document))
            print(f"reconcile: {findings.listed} events listed by Stripe, {len(findings.missed)} missed "
                  f"({findings.newly_counted} newly counted in billingwatch_missed_events_total)")
            if not args.replay or not findings.missed:
                return 0 if not findings.missed else 1
            sink, tally = StoreSink(recorder, args.retries), Tally()
            for document in findings.missed:
                delivery = await sink.deliver(document)
                tally.add(delivery)
                report(str(document["id"]), delivery)
            print(tally.summary("reconcile --replay"))
            return 0 if tally.ok else 1
        except (StripeApiError, StoreUnavailable) as exc:
            print(f"billingwatch: {exc if isinstance(exc, StripeApiError) else 'store unavailable'}", file=sys.stderr)
            return 1
        finally:
            await recorder.store.close()

    return asyncio.run(run())
