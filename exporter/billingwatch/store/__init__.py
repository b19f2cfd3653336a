"""Where BillingWatch keeps its state: Redis when REDIS_URL is set, else in this process."""

from billingwatch.store.contract import Outcome, Snapshot, Store, StoreUnavailable, Unrecordable
from billingwatch.store.memory_store import MemoryStore
from billingwatch.store.redis_store import RedisStore

__all__ = [
    "MemoryStore", "Outcome", "RedisStore", "Snapshot", "Store", "StoreUnavailable", "Unrecordable", "open_store",
]


def open_store(redis_url: str | None, prefix: str = "billingwatch", anomaly_log_size: int = 1000,
               wait_replicas: int = 0, wait_timeout_ms: int = 1000, event_log_size: int = 5000,
               allow_eviction: bool = False, quarantine_size: int = 1000) -> Store:
    if redis_url:
        return RedisStore(redis_url, prefix=prefix, anomaly_log_size=anomaly_log_size,
                          wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms, event_log_size=event_log_size,
                          allow_eviction=allow_eviction, quarantine_size=quarantine_size)
    return MemoryStore(anomaly_log_size=anomaly_log_size, event_log_size=event_log_size,
                       quarantine_size=quarantine_size)
