"""The `billingwatch` command. Subcommands register themselves in COMMANDS."""

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from billingwatch import __version__
from billingwatch.commands.backfill import add_backfill
from billingwatch.commands.digest import add_digest
from billingwatch.commands.migrate import add_migrate
from billingwatch.commands.reconcile import add_reconcile
from billingwatch.commands.replay import add_replay
from billingwatch.commands.requeue import add_requeue
from billingwatch.commands.rules import add_rules
from billingwatch.commands.serve import add_serve
from billingwatch.commands.simulate import add_simulate
from billingwatch.commands.web_config import add_web_config
from billingwatch.config import ConfigError

# Each entry adds one subcommand, defined in its own module under commands/.
COMMANDS: list[Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]] = [
    add_serve, add_rules, add_replay, add_backfill, add_reconcile, add_simulate, add_digest, add_migrate, add_requeue,
    add_web_config,
]


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO (the digest's queries, the alert pushes): noise, and a
    # command's one-line error must stay one line.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="billingwatch", description="Self-hosted monitoring of Stripe billing.")
    parser.add_argument("--version", action="version", version=f"billingwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"billingwatch: {exc}", file=sys.stderr)
        return 2
