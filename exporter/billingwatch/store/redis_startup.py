"""The start-up check of the Redis the exporter will write to: its eviction policy.

Called from the app factory (server.py), which uvicorn may call inside its running event loop:
the check runs in a thread with an event loop of its own and a client of its own.
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from redis.exceptions import RedisClusterException, RedisError

from billingwatch.config import ConfigError, Settings
from billingwatch.store.redis_store import RedisStore

log = logging.getLogger("billingwatch.store")


async def _eviction_refusal(settings: Settings) -> str | None:
    store = RedisStore(settings.redis_url, settings.redis_prefix, allow_eviction=settings.redis_allow_eviction)
    try:
        return await store.eviction_refusal()
    except (RedisError, OSError, RedisClusterException) as exc:
        # Not a refusal: Redis may come up after the exporter; /ready checks the policy on every probe.
        log.warning("could not check Redis's maxmemory-policy at start-up (%s); /ready checks it", type(exc).__name__)
        return None
    finally:
        await store.close()


def refuse_evicting_redis(settings: Settings) -> None:
    """ConfigError (one line, naming the setting) when REDIS_URL's Redis may evict keys and
    BILLINGWATCH_REDIS_ALLOW_EVICTION is not set; what could not be checked is logged."""
    if not settings.redis_url:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        refusal = pool.submit(asyncio.run, _eviction_refusal(settings)).result()
    if refusal is not None:
        raise ConfigError(refusal)
