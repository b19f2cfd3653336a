"""The Redis store: one EVALSHA per event, shared by any number of exporter replicas.

Every key carries the hash tag {<prefix>}, so the keys one script touches share a slot and
the design works on Redis Cluster. Every key is bounded by a TTL or a size cap.
"""

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, MovedError, RedisError, ResponseError, TryAgainError

from billingwatch.metrics.labels import LIVEMODES
from billingwatch.recording.plan import Check, Plan
from billingwatch.store.contract import LAPSE_HORIZON, Outcome, Snapshot, StoreUnavailable, Unrecordable

_SCRIPT = resources.files("billingwatch.store").joinpath("apply.lua").read_text()


# cjson keeps 14 significant digits of a number: integers cross Lua as strings, and come back
# as integers (_record).
_INT_FIELDS = ("amount", "event_created")


def _stringify(record: dict[str, Any]) -> dict[str, Any]:
    # details crosses Lua as one JSON string: cjson would round its numbers and turn {} into [].
    return {k: str(v) if k in _INT_FIELDS and isinstance(v, int) else json.dumps(v) if k == "details" else v
            for k, v in record.items()}


def _record(raw: bytes | str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(raw)
    for name in _INT_FIELDS:
        if isinstance(record.get(name), str):
            record[name] = int(record[name])
    if isinstance(record.get("details"), str):
        record["details"] = json.loads(record["details"])
    return record


def _check_args(check: Check) -> dict[str, Any]:
    args: dict[str, Any] = {
        "op": check.op,
        "ttl": str(check.ttl),
        "member": check.member,
        "at": str(check.at),
        "lo": str(check.at - check.window),
        "hi": str(check.at + check.window),
        "cap": str(check.cap),
        "window": str(check.window),
        "amount": str(check.amount),
        "threshold": str(check.threshold),
        "counters": {k: str(v) for k, v in check.counters.items()},
    }
    if check.anomaly is not None:
        args["anomaly"] = _stringify(check.anomaly.as_dict())
        args["anomaly_counter"] = check.anomaly_counter
    return args


# REDIS_URL of a Redis Cluster: any node of it; the client learns the slot map from there.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def _client(url: str) -> "aioredis.Redis | RedisCluster":
    """The client REDIS_URL asks for: redis+cluster:// (or rediss+cluster://) a cluster client,
    which follows MOVED/ASK and reloads the script on a node that lacks it; else one server."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in CLUSTER_SCHEMES:
        return RedisCluster.from_url(
            f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}", socket_timeout=2.0, socket_connect_timeout=2.0
        )
    return aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=15)


def _why_not(exc: BaseException) -> str:
    """Why the script cannot run, for /ready: the class, and Redis's own words for a refusal
    (they name no secret), with the fix when the URL names a cluster node without cluster mode."""
    if isinstance(exc, MovedError | AskError):
        return (f"{type(exc).__name__}: this Redis node does not serve the slot of the store's keys; "
                "REDIS_URL names a Redis Cluster node: use redis+cluster://")
    if isinstance(exc, ResponseError) and not isinstance(exc, TryAgainError):
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__
    return type(exc).__name__


class RedisStore:
    kind = "redis"

    def __init__(self, url: str, prefix: str = "billingwatch", anomaly_log_size: int = 1000) -> None:
        self._redis = _client(url)
        self._script = self._redis.register_script(_SCRIPT)
        self._tag = "{" + prefix + "}"
        self._log_size = anomaly_log_size
        self.counters_key = self.key("counters")
        self.gauges_key = self.key("gauges")
        self.anomalies_key = self.key("anomalies")

    def key(self, name: str) -> str:
        return f"{self._tag}:{name}"

    def _event_key(self, event_id: str, livemode: str) -> str:
        return self.key(f"e:{livemode}:{event_id}")

    def _lapse_key(self, livemode: str) -> str:
        return self.key("lapse:" + livemode)

    def script_call(self, plan: Plan) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of the apply script for this plan (bench/state.py replays them in bulk)."""
        sub_id, mode = "-", plan.livemode
        if plan.subscription is not None:
            sub_id, mode = plan.subscription.id, plan.subscription.livemode
        elif plan.payment is not None:
            sub_id, mode = plan.payment.id, plan.payment.livemode
        keys = [
            self._event_key(plan.event_id, plan.livemode),
            self.counters_key,
            self.gauges_key,
            self.anomalies_key,
            self.key(f"s:{mode}:{sub_id}"),  # live and test ids never share state
            self._lapse_key(mode),
            *(self.key("c:" + check.key) for check in plan.checks),
        ]
        body: dict[str, Any] = {
            "ttl": str(plan.dedup_ttl),
            "counters": {k: str(v) for k, v in plan.counters.items()},
            "maxima": {k: str(v) for k, v in plan.maxima.items()},
            "checks": [_check_args(c) for c in plan.checks],
        }
        if plan.subscription is not None:
            s = plan.subscription
            body["subscription"] = {
                "id": s.id, "at": str(s.at), "held": s.held, "sf": s.status_field, "mf": s.mrr_field,
                "mrr": str(s.mrr_milli), "end": str(s.period_end), "ttl": str(s.ttl), "se": s.ended_counter,
                "watch": s.lapse_watched,
            }
        if plan.payment is not None:
            p = plan.payment
            body["payment"] = {"id": p.id, "at": str(p.at), "ttl": str(p.ttl)}
        return keys, [json.dumps(body), self._log_size]

    async def apply(self, plan: Plan) -> Outcome:
        keys, args = self.script_call(plan)
        try:
            reply = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        if int(reply[0]) == 1:
            return Outcome(duplicate=True)
        if int(reply[0]) == 2:
            raise Unrecordable(reply[1].decode())
        return Outcome(duplicate=False, anomalies=[_record(r) for r in reply[1:]])

    async def snapshot(self, now: float, lapse_grace: int, lapse_horizon: int = LAPSE_HORIZON) -> Snapshot:
        cutoff, oldest = now - lapse_grace, now - lapse_horizon
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.counters_key)
                pipe.hgetall(self.gauges_key)
                for mode in LIVEMODES:
                    pipe.zcount(self._lapse_key(mode), oldest, cutoff)
                counters, gauges, *lapsed = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        return Snapshot(
            counters={k.decode(): int(v) for k, v in counters.items()},
            gauges={k.decode(): int(v) for k, v in gauges.items()},
            lapsed=dict(zip(LIVEMODES, (int(n) for n in lapsed), strict=True)),
        )

    async def anomalies(self, limit: int) -> list[dict[str, Any]]:
        try:
            raw = await self._redis.lrange(self.anomalies_key, 0, max(limit, 1) - 1)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        return [_record(r) for r in raw]

    async def recorded(self, events: Sequence[tuple[str, str]]) -> list[bool]:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event_id, livemode in events:
                    pipe.exists(self._event_key(event_id, livemode))
                return [bool(n) for n in await pipe.execute()]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def increment(self, counters: dict[str, int]) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for name, value in counters.items():
                    pipe.hincrby(self.counters_key, name, value)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def can_record(self) -> str | None:
        """None when an event can be recorded now, else why not: runs the apply script in its
        probe mode (writes nothing) on the node that owns the store's slot, so a reachable Redis
        that refuses scripts or does not serve the slot is not ready."""
        try:
            reply = await self._script(keys=[self.counters_key], args=["probe"])
        except (RedisError, OSError) as exc:
            return _why_not(exc)
        return None if int(reply[0]) == 3 else f"unexpected probe reply {reply!r:.80}"

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()
