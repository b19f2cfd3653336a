"""`billingwatch replay FILE...`: feed recorded Stripe events (JSON Lines) into BillingWatch.

Idempotent: an event already recorded comes back as a duplicate and changes no count, so the
same file can be replayed any number of times.
"""

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

from billingwatch.commands.feed import Unreadable, add_sink_arguments, feed, open_sink
from billingwatch.config import ConfigError
from billingwatch.jsonload import loads


def add_replay(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser(
        "replay", help="feed recorded Stripe events (JSON Lines) to a running exporter or into the store",
        description="Feed Stripe events, one JSON object per line (as `stripe events list` items or "
        "webhook bodies), to a running exporter's POST /api/import, or with --direct straight into "
        "the Redis store. Replaying the same events again changes no count.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSON Lines file of Stripe events; - for stdin")
    add_sink_arguments(parser)
    parser.set_defaults(run=replay)


def lines(name: str) -> Iterator[tuple[str, str]]:
    """(file:line, text) of each non-blank line."""
    if name == "-":
        yield from numbered("stdin", sys.stdin)
        return
    try:
        with Path(name).open(encoding="utf-8") as handle:
            yield from numbered(name, handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name} is not UTF-8 text") from None


def numbered(label: str, handle: IO[str]) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(handle, 1):
        if line.strip():
            yield f"{label}:{number}", line


async def documents(names: list[str]) -> AsyncIterator[tuple[str, Any]]:
    for name in names:
        for label, line in lines(name):
            try:
                document = loads(line)
            except ValueError:
                document = Unreadable("not JSON")
            except RecursionError:  # nesting deeper than the parser's stack: reported, never a traceback
                document = Unreadable("JSON nested too deeply")
            yield label, document


def readable(names: list[str]) -> None:
    """Refuse a file that cannot be opened before anything is sent (reading it is one pass, later)."""
    for name in names:
        if name != "-":
            try:
                Path(name).open("rb").close()
            except OSError as exc:
                raise ConfigError(f"cannot read {name}: {exc.strerror}") from None


def replay(args: argparse.Namespace) -> int:
    readable(args.files)
    sink = open_sink(args)

    async def run() -> int:
        try:
            # One pass over the files: the progress bar counts events without a total.
            tally = await feed(documents(args.files), sink, "replay", None, args.progress)
        finally:
            await sink.close()
        print(tally.summary("replay"))
        return 0 if tally.ok else 1

    return asyncio.run(run())
