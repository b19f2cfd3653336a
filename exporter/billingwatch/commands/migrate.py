"""`billingwatch migrate [--dry-run]`: bring the Redis store to the layout this release writes, in place.

`serve` runs the same migration at start-up (docs/deployment.md#upgrades); this command says
what it would change first, or runs it on its own (e.g. as a Kubernetes Job before a rollout).
"""

import argparse
import asyncio

from billingwatch.config import ConfigError, from_env
from billingwatch.store.layout import LAYOUT_VERSION, LayoutError, RedisError
from billingwatch.store.redis_store import RedisStore


def add_migrate(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser("migrate", help="migrate the Redis store's layout in place (serve does it at start-up)")
    parser.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    parser.set_defaults(run=migrate)


def migrate(args: argparse.Namespace) -> int:
    settings = from_env()
    if not settings.redis_url:
        print(f"no REDIS_URL: the in-process store starts empty at layout {LAYOUT_VERSION}; nothing to migrate")
        return 0
    for account in settings.accounts:  # each account's store (BILLINGWATCH_ACCOUNTS_FILE) has its own layout
        named = f"account {account.name}: " if settings.accounts_file else ""
        for line in asyncio.run(_run(settings.redis_url, settings.for_account(account).redis_prefix, args.dry_run)):
            print(named + line)
    return 0


async def _run(url: str, prefix: str, dry_run: bool) -> list[str]:
    store = RedisStore(url, prefix=prefix)
    try:
        return (await store.migration().run(dry_run=dry_run)).lines()
    except LayoutError as exc:
        raise ConfigError(str(exc)) from exc
    except (RedisError, OSError) as exc:
        raise ConfigError(f"cannot migrate the store: Redis answered {type(exc).__name__}") from exc
    finally:
        await store.close()
