"""What Redis says of its memory: the eviction policy (checked at start-up and by /ready) and the
figures behind the store gauges (INFO memory and stats).

Any maxmemory-policy but noeviction lets Redis drop keys when it is full, dedup keys among them
(every one carries a TTL, so volatile-* policies take them too): a redelivered event then counts
twice, silently. Managed Redis often refuses CONFIG; INFO memory reports the policy as well.
"""

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from billingwatch.store.contract import StoreMemory

NOEVICTION = "noeviction"
ALLOW_EVICTION = "BILLINGWATCH_REDIS_ALLOW_EVICTION"


@dataclass(frozen=True)
class PolicyReading:
    policy: str | None  # None: neither CONFIG GET nor INFO told it
    unchecked: str | None = None  # what could not be checked, said plainly for the log


def _refusal(exc: ResponseError) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}" if str(exc) else type(exc).__name__


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_policy(client: Any, **target: Any) -> PolicyReading:
    """maxmemory-policy by CONFIG GET, else from INFO memory. `target`: the cluster node that holds
    the store's slot (target_nodes=...), none otherwise. Connection errors propagate."""
    try:
        reply = await client.config_get("maxmemory-policy", **target)
        values = {_text(k): _text(v) for k, v in dict(reply).items()}
        if "maxmemory-policy" in values:
            return PolicyReading(values["maxmemory-policy"])
        config = "CONFIG GET maxmemory-policy answered nothing"
    except ResponseError as exc:  # NoPermissionError (ACL), or CONFIG renamed away
        config = f"CONFIG GET maxmemory-policy is refused ({_refusal(exc)})"
    try:
        info = await client.info("memory", **target)
    except ResponseError as exc:
        return PolicyReading(None, f"{config}, and so is INFO memory ({_refusal(exc)}): the Redis eviction "
                                   "policy could not be checked; make sure maxmemory-policy is noeviction")
    if "maxmemory_policy" not in info:
        return PolicyReading(None, f"{config}, and INFO memory has no maxmemory_policy: the Redis eviction "
                                   "policy could not be checked; make sure maxmemory-policy is noeviction")
    return PolicyReading(_text(info["maxmemory_policy"]), f"{config}: read maxmemory_policy from INFO memory instead")


def eviction_refusal(policy: str) -> str:
    """The one-line reason a policy that may evict keys is refused."""
    return (f"Redis maxmemory-policy is {policy}: Redis may evict BillingWatch's keys when full, and a "
            f"redelivered event whose dedup key was evicted counts twice; set maxmemory-policy {NOEVICTION} "
            f"(redis.conf or CONFIG SET), or {ALLOW_EVICTION}=1 to accept that risk")


async def read_memory(client: Any, **target: Any) -> StoreMemory | None:
    """used_memory, maxmemory and evicted_keys; None when INFO is refused."""
    try:
        info = await client.info("memory", "stats", **target)
    except ResponseError:
        return None
    try:
        return StoreMemory(int(info["used_memory"]), int(info["maxmemory"]), int(info["evicted_keys"]))
    except (KeyError, TypeError, ValueError):
        return None
