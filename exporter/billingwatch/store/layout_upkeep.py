"""The layout upkeep `serve` runs: once before it listens, then in the background (store/layout.py)."""

import asyncio
import logging

from billingwatch.config import ConfigError
from billingwatch.store.contract import Store
from billingwatch.store.layout import UPKEEP_SECONDS, LayoutError, RedisError
from billingwatch.store.redis_store import RedisStore

log = logging.getLogger("billingwatch.layout")
RETRY_SECONDS = 30.0


async def at_start(url: str, prefix: str) -> None:
    """Migrate before listening. A layout this release cannot use refuses the start (ConfigError,
    one line); an unreachable Redis does not: the background upkeep migrates once it answers,
    and until then the apply script refuses only a newer layout."""
    store = RedisStore(url, prefix=prefix)
    try:
        await store.upkeep_layout()
    except LayoutError as exc:
        raise ConfigError(str(exc)) from exc
    except (RedisError, OSError) as exc:
        log.warning("could not check the store layout at start-up (%s): retrying in the background",
                    type(exc).__name__)
    finally:
        await store.close()


async def in_background(store: Store, every: float = UPKEEP_SECONDS) -> None:
    """Every `every` seconds (RETRY_SECONDS after a failure): migrate, or take off the TTLs a
    replica of the previous release set on money-holding hashes during a rolling update."""
    if not isinstance(store, RedisStore):
        return
    wait = every
    while True:
        await asyncio.sleep(wait)
        try:
            result = await store.upkeep_layout()
            if isinstance(result, int) and result:
                log.info("layout upkeep: %d money-holding keys kept without a TTL again "
                         "(written by a replica of the previous release)", result)
            wait = every
        except (LayoutError, RedisError, OSError) as exc:
            log.warning("layout upkeep failed: %s", str(exc) if isinstance(exc, LayoutError) else type(exc).__name__)
            wait = RETRY_SECONDS
