"""The Redis store: one EVALSHA per event, shared by any number of exporter replicas.

Every key carries the hash tag {<prefix>}, so the keys one script touches share a slot and
the design works on Redis Cluster. Every key is bounded by a TTL or a size cap.
"""

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import AskError, MovedError, NoScriptError, RedisError, ResponseError, TryAgainError

from billingwatch.metrics.labels import LIVEMODES
from billingwatch.recording.plan import Check, LogEntry, Plan
from billingwatch.store.contract import (
    LAPSE_HORIZON,
    MAX_VERDICTS,
    Outcome,
    Snapshot,
    StoreUnavailable,
    Unrecordable,
)
from billingwatch.store.redis_connect import connect

_SCRIPT = resources.files("billingwatch.store").joinpath("apply.lua").read_text()
_VERDICT_SCRIPT = resources.files("billingwatch.store").joinpath("verdict.lua").read_text()


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

    def __init__(self, url: str, prefix: str = "billingwatch", anomaly_log_size: int = 1000,
                 wait_replicas: int = 0, wait_timeout_ms: int = 1000, event_log_size: int = 5000) -> None:
        self._redis, self._sentinel = connect(url)
        self._script = self._redis.register_script(_SCRIPT)
        self._verdict_script = self._redis.register_script(_VERDICT_SCRIPT)
        # WAIT <replicas> <timeout> after each event that wrote: 2xx only once replicas hold it.
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._tag = "{" + prefix + "}"
        self._log_size = anomaly_log_size
        self._event_log_size = event_log_size
        self.counters_key = self.key("counters")
        self.gauges_key = self.key("gauges")
        self.anomalies_key = self.key("anomalies")
        self.events_key = self.key("events")
        self.verdicts_key = self.key("verdicts")

    def key(self, name: str) -> str:
        return f"{self._tag}:{name}"

    def _event_key(self, event_id: str, livemode: str) -> str:
        return self.key(f"e:{livemode}:{event_id}")

    def _lapse_key(self, livemode: str) -> str:
        return self.key("lapse:" + livemode)

    def script_call(self, plan: Plan) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of the apply script for this plan (bench/state.py replays them in bulk)."""
        sub_id, mode, customer = "-", plan.livemode, "-"
        if plan.subscription is not None:
            sub_id, mode = plan.subscription.id, plan.subscription.livemode
            customer = plan.subscription.customer_key
        elif plan.payment is not None:
            sub_id, mode = plan.payment.id, plan.payment.livemode
        keys = [
            self._event_key(plan.event_id, plan.livemode),
            self.counters_key,
            self.gauges_key,
            self.anomalies_key,
            self.key(f"s:{mode}:{sub_id}"),  # live and test ids never share state
            self._lapse_key(mode),
            self.events_key,
            self.key(f"cu:{mode}:{customer}"),
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
                "id": s.id, "at": str(s.at), "rank": str(s.rank), "held": s.held,
                "g": [[name, str(value)] for name, value in s.gauges], "cur": s.mrr_currency,
                "cm": str(s.contribution), "pay": s.paying_scheme, "end": str(s.period_end), "ttl": str(s.ttl),
                "ctl": str(s.customer_ttl or s.ttl), "se": s.ended_counter, "watch": s.lapse_watched,
            }
            if s.movement_schemes:  # absent for history: no movement counter moves
                body["subscription"]["mv"] = list(s.movement_schemes)
        if plan.payment is not None:
            p = plan.payment
            body["payment"] = {"id": p.id, "at": str(p.at), "ttl": str(p.ttl)}
        line = "" if plan.log is None else json.dumps(plan.log.as_dict())[:-1]  # the script closes it
        return keys, [json.dumps(body), self._log_size, line, self._event_log_size]

    async def apply(self, plan: Plan) -> Outcome:
        keys, args = self.script_call(plan)
        try:
            if self._wait_replicas:
                reply = await self._apply_and_wait(keys, args)
            else:
                reply = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        if int(reply[0]) == 1:
            return Outcome(duplicate=True)
        if int(reply[0]) == 2:
            raise Unrecordable(reply[1].decode())
        return Outcome(duplicate=False, anomalies=[_record(r) for r in reply[1:]])

    async def apply_many(self, plans: Sequence[Plan]) -> list[Outcome | Unrecordable | StoreUnavailable]:
        """Apply a batch in one non-transactional pipeline: each plan is still its own atomic script
        call with its own reply, in order. An entry is StoreUnavailable when its call got no reply
        (or, with WAIT, when replicas did not confirm the batch): retrying it is safe, since an
        event that did run comes back a duplicate."""
        calls = [self.script_call(plan) for plan in plans]
        results: list[Outcome | Unrecordable | StoreUnavailable] = [StoreUnavailable("no reply")] * len(plans)
        todo = list(range(len(plans)))
        for attempt in range(2):  # the second only after NOSCRIPT: a restarted or new master
            try:
                replies, confirmed = await self._pipelined([calls[i] for i in todo])
            except (RedisError, OSError) as exc:
                for i in todo:
                    results[i] = StoreUnavailable(type(exc).__name__)
                return results
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError) and not attempt:
                    missing.append(i)
                elif isinstance(reply, Exception):
                    results[i] = StoreUnavailable(type(reply).__name__)
                elif int(reply[0]) == 2:
                    results[i] = Unrecordable(reply[1].decode())
                elif confirmed < self._wait_replicas:
                    results[i] = StoreUnavailable(
                        f"{confirmed} of {self._wait_replicas} replicas confirmed the write in time")
                elif int(reply[0]) == 1:
                    results[i] = Outcome(duplicate=True)
                else:
                    results[i] = Outcome(duplicate=False, anomalies=[_record(r) for r in reply[1:]])
            if not missing:
                break
            try:
                await self._redis.script_load(_SCRIPT)
            except (RedisError, OSError) as exc:
                for i in missing:
                    results[i] = StoreUnavailable(type(exc).__name__)
                return results
            todo = missing
        return results

    async def _pipelined(self, calls: list[tuple[list[str], list[Any]]]) -> tuple[list[Any], int]:
        """EVALSHA of each call in one round trip (replies in order, errors as values), and with WAIT
        set, how many replicas confirmed them all. The PUBLISH before WAIT is a write after every
        call's, so WAIT covers duplicates' earlier writes too (see _apply_and_wait)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.execute_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
            if self._wait_replicas:
                pipe.execute_command("PUBLISH", self.key("wait"), "1")
                pipe.execute_command("WAIT", self._wait_replicas, self._wait_timeout_ms)
            replies = await pipe.execute(raise_on_error=False)
        if not self._wait_replicas:
            return replies, 0
        confirmed = replies[-1]
        if isinstance(confirmed, Exception):
            raise confirmed
        return replies[:-2], int(confirmed)

    async def _waited(self, command: tuple[Any, ...]) -> tuple[Any, int]:
        """`command`, then WAIT on the same connection (one round trip): its reply and how many
        replicas confirmed every write this connection has made so far."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.execute_command(*command)
            pipe.execute_command("WAIT", self._wait_replicas, self._wait_timeout_ms)
            reply, confirmed = await pipe.execute(raise_on_error=False)
        if isinstance(confirmed, Exception):
            raise confirmed
        return reply, int(confirmed)

    async def _apply_and_wait(self, keys: list[str], args: list[Any]) -> Any:
        evalsha = ("EVALSHA", self._script.sha, len(keys), *keys, *args)
        reply, confirmed = await self._waited(evalsha)
        if isinstance(reply, NoScriptError):  # a new master after a failover, or a restart: nothing ran
            await self._redis.script_load(_SCRIPT)
            reply, confirmed = await self._waited(evalsha)
        if isinstance(reply, Exception):
            raise reply
        if int(reply[0]) == 1:
            # A duplicate writes at most its log line. Redis 7.0 makes WAIT cover everything the master wrote before
            # the connection's last command, but newer servers only its last write that replicated,
            # which may precede this event's earlier write (another connection, or an attempt whose
            # WAIT failed). A PUBLISH (no subscriber, no key) replicates after that write: once
            # replicas confirm it, they hold the event, on any version.
            _, confirmed = await self._waited(("PUBLISH", self.key("wait"), "1"))
        if int(reply[0]) != 2 and confirmed < self._wait_replicas:
            raise StoreUnavailable(f"{confirmed} of {self._wait_replicas} replicas confirmed the write in time")
        return reply

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

    async def events(self, limit: int) -> list[dict[str, Any]]:
        try:
            raw = await self._redis.lrange(self.events_key, 0, max(limit, 1) - 1)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        return [json.loads(r) for r in raw]

    async def log_rejected(self, entry: LogEntry) -> None:
        line = json.dumps({**entry.as_dict(), "result": "rejected", "anomalies": []})
        try:
            async with self._redis.pipeline(transaction=True) as pipe:  # MULTI: never an uncapped list
                pipe.lpush(self.events_key, line)
                pipe.ltrim(self.events_key, 0, self._event_log_size - 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

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

    async def set_verdict(self, anomaly_id: str, verdict: str, at: int, counter: str) -> str | None:
        record = json.dumps({"verdict": verdict, "at": at})
        try:
            reply = await self._verdict_script(keys=[self.verdicts_key, self.counters_key],
                                               args=[anomaly_id, verdict, record, counter, MAX_VERDICTS])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        status, previous = int(reply[0]), reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        if status == 2:
            raise Unrecordable(f"{MAX_VERDICTS} anomalies already have a verdict")
        return previous or None

    async def verdicts(self, anomaly_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not anomaly_ids:
            return {}
        try:
            raw = await self._redis.hmget(self.verdicts_key, list(anomaly_ids))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        return {i: json.loads(r) for i, r in zip(anomaly_ids, raw, strict=True) if r is not None}

    async def can_record(self) -> str | None:
        """None when an event can be recorded now, else why not: runs the apply script in its
        probe mode (writes nothing) on the node that owns the store's slot, so a reachable Redis
        that refuses scripts or does not serve the slot is not ready."""
        try:
            reply = await self._script(keys=[self.counters_key], args=["probe"])
            online = await self._replicas_online() if self._wait_replicas else 0
        except (RedisError, OSError) as exc:
            return _why_not(exc)
        if int(reply[0]) != 3:
            return f"unexpected probe reply {reply!r:.80}"
        if online < self._wait_replicas:
            # The webhook would answer 503: WAIT cannot get the replicas it needs.
            return (f"{online} of the {self._wait_replicas} Redis replicas BILLINGWATCH_REDIS_WAIT_REPLICAS "
                    "asks for are online")
        return None

    async def _replicas_online(self) -> int:
        """Replicas of the master that stream its writes (INFO replication: slaveN:...,state=online)."""
        info = await self._redis.info("replication")
        return sum(1 for key, value in info.items()
                   if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online")

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()
