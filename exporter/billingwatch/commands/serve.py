"""`billingwatch serve`: run the exporter under uvicorn (webhook endpoint, /metrics, API)."""

import argparse
import logging
import os
from dataclasses import replace

from billingwatch.config import ConfigError, from_env
from billingwatch.startup import check_settings


def add_serve(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser("serve", help="run the exporter (webhook endpoint and /metrics)")
    parser.add_argument("--host", help="listen address (env BILLINGWATCH_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=port_arg, help="listen port (env BILLINGWATCH_PORT, default 9786)")
    parser.add_argument(
        "--workers", type=workers_arg, default=1, metavar="N|auto",
        help="uvicorn worker processes; auto: one per core this process may use (more than 1 needs REDIS_URL)",
    )
    parser.add_argument(
        "--insecure-skip-signature", action="store_true",
        help="development only: accept unsigned events (livemode events are still rejected)",
    )
    parser.set_defaults(run=serve)


def port_arg(text: str) -> int:
    """1..65535, as BILLINGWATCH_PORT: uvicorn would take 70000 as port 4464, and 0 meant the default."""
    if not text.isascii() or not text.isdigit() or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError("must be a port number from 1 to 65535")
    return int(text)


def workers_arg(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError("must be a number from 1 to 256, or auto")
    return int(text)


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers' cpusets narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from billingwatch.http.limits import server_options

    settings = from_env()
    settings = replace(
        settings,
        host=args.host or settings.host,
        port=args.port or settings.port,
        insecure_skip_signature=args.insecure_skip_signature or settings.insecure_skip_signature,
    )
    check_settings(settings)
    if args.workers == "auto" and not settings.redis_url:
        # Refused even on one core: whether it starts must not depend on the machine.
        raise ConfigError("--workers auto needs REDIS_URL: the in-process store is not shared between workers")
    workers = cores() if args.workers == "auto" else args.workers
    if workers > 1 and not settings.redis_url:
        raise ConfigError("--workers > 1 needs REDIS_URL: the in-process store is not shared between workers")
    if settings.redis_url:
        # The store's layout first (docs/deployment.md#upgrades): migrated in place, or a refusal.
        import asyncio

        from billingwatch.store.layout_upkeep import at_start

        for account in settings.accounts:  # each account's store (BILLINGWATCH_ACCOUNTS_FILE) has its layout
            asyncio.run(at_start(settings.redis_url, settings.for_account(account).redis_prefix))
    if args.insecure_skip_signature:
        os.environ["BILLINGWATCH_INSECURE_SKIP_SIGNATURE"] = "1"  # for worker processes
    os.environ["BILLINGWATCH_HOST"] = settings.host  # the app's default Host allowlist follows the bind
    tls = settings.web_config if settings.web_config and settings.web_config.tls else None
    logging.getLogger("billingwatch").info("listening on %s://%s:%d (%d worker%s)", "https" if tls else "http",
                                           settings.host, settings.port, workers, "" if workers == 1 else "s")
    uvicorn.run(
        "billingwatch.server:app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level="info",
        access_log=False,
        # The exporter trusts no proxy: the peer address stays the TCP peer's (README "Security").
        proxy_headers=False,
        # Request limits (docs/security.md#request-limits): parser, header buffer, connections, keep-alive.
        **server_options(settings),
        # tls_server_config of BILLINGWATCH_WEB_CONFIG_FILE (docs/sign-in.md).
        ssl_certfile=tls.cert_file if tls else None,
        ssl_keyfile=tls.key_file if tls else None,
    )
    return 0
