"""The `billingwatch` command. Subcommands register themselves in COMMANDS."""

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

from billingwatch import __version__
from billingwatch.commands.backfill import add_backfill
from billingwatch.commands.reconcile import add_reconcile
from billingwatch.commands.replay import add_replay
from billingwatch.commands.simulate import add_simulate
from billingwatch.config import ConfigError, from_env
from billingwatch.rules.command import add_rules


def add_serve(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser("serve", help="run the exporter (webhook endpoint and /metrics)")
    parser.add_argument("--host", help="listen address (env BILLINGWATCH_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (env BILLINGWATCH_PORT, default 9786)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (needs REDIS_URL)")
    parser.add_argument(
        "--insecure-skip-signature", action="store_true",
        help="development only: accept unsigned events (livemode events are still rejected)",
    )
    parser.set_defaults(run=serve)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = from_env()
    settings = replace(
        settings,
        host=args.host or settings.host,
        port=args.port or settings.port,
        insecure_skip_signature=args.insecure_skip_signature or settings.insecure_skip_signature,
    )
    settings.check()
    if args.workers > 1 and not settings.redis_url:
        raise ConfigError("--workers > 1 needs REDIS_URL: the in-process store is not shared between workers")
    if args.insecure_skip_signature:
        os.environ["BILLINGWATCH_INSECURE_SKIP_SIGNATURE"] = "1"  # for worker processes
    os.environ["BILLINGWATCH_HOST"] = settings.host  # the app's default Host allowlist follows the bind
    logging.getLogger("billingwatch").info("listening on http://%s:%d", settings.host, settings.port)
    uvicorn.run(
        "billingwatch.server:app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=args.workers,
        log_level="info",
        access_log=False,
        # The exporter trusts no proxy: the peer address stays the TCP peer's (README "Security").
        proxy_headers=False,
        # Request limits (README "Request limits"): header bytes and deadline in the protocol,
        # connections, idle keep-alive; h11's own cap in case someone swaps the protocol for h11.
        http="billingwatch.limits:HttpProtocol",
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_timeout,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    return 0


# Each entry adds one subcommand; later subcommands (rules, replay, ...) add a line here.
COMMANDS: list[Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]] = [
    add_serve, add_rules, add_replay, add_backfill, add_reconcile, add_simulate,
]


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
