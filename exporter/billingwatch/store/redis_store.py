"""The Redis store: one EVALSHA per event, shared by any number of exporter replicas.

Every key carries the hash tag {<prefix>}, so the keys one script touches share a slot and
the design works on Redis Cluster. Every key is bounded by a TTL or a size cap, but the state
that holds money (store/layout.py, layout 2): it lives as long as its subscription.
"""

import json
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from billingwatch.metrics.labels import LIVEMODES
from billingwatch.recording.plan import Check, LogEntry, Plan
from billingwatch.recording.quarantine import DROPPED_SCHEME, ENTRIES_SCHEME, Quarantine, encoded, member
from billingwatch.store.anomaly_text import INT_FIELDS as _INT_FIELDS
from billingwatch.store.anomaly_text import stringify as _stringify
from billingwatch.store.batch_args import EventArgs, check_encodable, event_args
from billingwatch.store.contract import (
    LAPSE_HORIZON,
    MAX_VERDICTS,
    LayoutRefused,
    Outcome,
    Snapshot,
    StoreUnavailable,
    Unrecordable,
)
from billingwatch.store.layout import LAYOUT_VERSION, Migration, Report, newer_reason, parse_version, upkeep
from billingwatch.store.redis_connect import check_prefix, connect
from billingwatch.store.redis_memory import ALLOW_EVICTION, NOEVICTION, eviction_refusal, read_memory, read_policy
from billingwatch.store.write_gate import WRITE, WriteGate

log = logging.getLogger("billingwatch.store")

_SCRIPT = resources.files("billingwatch.store").joinpath("apply.lua").read_text()
_BATCH_SCRIPT = resources.files("billingwatch.store").joinpath("apply_batch.lua").read_text()
# Events per apply_batch.lua call. A call holds Redis for its whole run, about size x 50 µs
# (256: ~13 ms) in which no other client is served; larger batches save little more per event.
BATCH_EVENTS = 256
# Totals reaching it in absolute value set the overflow flag (apply.lua, apply_batch.lua).
OVERFLOW_FLAG_AT = 2**62
_VERDICT_SCRIPT = resources.files("billingwatch.store").joinpath("verdict.lua").read_text()
_QUARANTINE_SCRIPT = resources.files("billingwatch.store").joinpath("quarantine.lua").read_text()
# The readiness probe's own write while writes are refused: larger than an event's script call,
# so a Redis too full for an event (its query buffer counts against maxmemory) refuses it too.
PROBE_BYTES = 64 * 1024
# What a call to Redis can raise: a cluster client refuses keys of several slots (CROSSSLOT)
# with RedisClusterException, which is no RedisError.
_ERRORS = (RedisError, OSError, RedisClusterException)


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
        "gap_detail": check.gap_detail,
        "counters": {k: str(v) for k, v in check.counters.items()},
    }
    if check.op == "track":
        args["gauges"] = list(check.gauges)
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
    if isinstance(exc, ResponseError | RedisClusterException) and not isinstance(exc, TryAgainError):
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__
    return type(exc).__name__


# apply.lua's reply for a store whose layout is newer than the script's (store/layout.py).
_NEWER_LAYOUT = 9
# apply_batch.lua's reply for an event it leaves to apply.lua (its overflow pre-check).
_EXACT = 8
# apply_batch.lua's reply for an event a failing command stopped (a key of another type).
_FAILED = 7


def _check_layout(raw: bytes | str | None) -> None:
    """Readers refuse a newer layout too: its fields may mean something else."""
    version = parse_version(raw)
    if version is None or version > LAYOUT_VERSION:
        raise LayoutRefused(newer_reason(raw.decode() if isinstance(raw, bytes) else str(raw)))


class RedisStore:
    kind = "redis"

    def __init__(self, url: str, prefix: str = "billingwatch", anomaly_log_size: int = 1000,
                 wait_replicas: int = 0, wait_timeout_ms: int = 1000, event_log_size: int = 5000,
                 allow_eviction: bool = False, quarantine_size: int = 1000, batch_events: int = BATCH_EVENTS) -> None:
        check_prefix(prefix)
        self._batch_events = batch_events  # events per apply_batch.lua call (BATCH_EVENTS)
        self.gate = WriteGate()
        self._allow_eviction = allow_eviction  # BILLINGWATCH_REDIS_ALLOW_EVICTION: a warning, not a refusal
        self._logged: set[str] = set()  # eviction-policy lines already logged (/ready asks often)
        self._redis, self._sentinel = connect(url)
        self._script = self._redis.register_script(_SCRIPT)
        self._batch_script = self._redis.register_script(_BATCH_SCRIPT)
        self._quarantine_script = self._redis.register_script(_QUARANTINE_SCRIPT)
        self._quarantine_size = quarantine_size
        self._verdict_script = self._redis.register_script(_VERDICT_SCRIPT)
        # WAIT <replicas> <timeout> after each event that wrote: 2xx only once replicas hold it.
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._prefix = prefix
        self._tag = "{" + prefix + "}"
        self._log_size = anomaly_log_size
        self._event_log_size = event_log_size
        self.counters_key = self.key("counters")
        self.gauges_key = self.key("gauges")
        self.anomalies_key = self.key("anomalies")
        self.events_key = self.key("events")
        self.layout_key = self.key("layout")  # store/layout.py
        self.overflow_key = self.key("overflow")  # set once a total reaches 2^62 (apply_batch.lua)
        self.quarantine_key = self.key("quarantine")
        self.quarantine_order_key = self.key("quarantine:order")
        self.quarantine_bodies_key = self.key("quarantine:bodies")
        self.verdicts_key = self.key("verdicts")

    def key(self, name: str) -> str:
        return f"{self._tag}:{name}"

    @property
    def prefix(self) -> str:
        """The key prefix (inside the hash tag): what a planner writing EventArgs itself needs."""
        return self._prefix

    def _event_key(self, event_id: str, livemode: str) -> str:
        return self.key(f"e:{livemode}:{event_id}")

    def _lapse_key(self, livemode: str) -> str:
        return self.key("lapse:" + livemode)

    def _script_keys(self, event_id: str, livemode: str, mode: str, sub_id: str, customer: str,
                     check_keys: Sequence[str]) -> list[str]:
        """The apply script's KEYS: an event's, or the readiness probe's (the same shape)."""
        return [
            self._event_key(event_id, livemode),
            self.counters_key,
            self.gauges_key,
            self.anomalies_key,
            self.key(f"s:{mode}:{sub_id}"),  # live and test ids never share state
            self._lapse_key(mode),
            self.events_key,
            self.key(f"cu:{mode}:{customer}"),
            self.layout_key,
            self.overflow_key,
            *(self.key("c:" + key) for key in check_keys),
        ]

    def script_call(self, plan: Plan) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of the apply script for this plan (bench/state.py replays them in bulk)."""
        sub_id, mode, customer = "-", plan.livemode, "-"
        if plan.subscription is not None:
            sub_id, mode = plan.subscription.id, plan.subscription.livemode
            customer = plan.subscription.customer_key
        elif plan.payment is not None:
            sub_id, mode = plan.payment.id, plan.payment.livemode
        keys = self._script_keys(plan.event_id, plan.livemode, mode, sub_id, customer,
                                 [check.key for check in plan.checks])
        body: dict[str, Any] = {
            "ttl": str(plan.dedup_ttl),
            "counters": {k: str(v) for k, v in plan.counters.items()},
            "maxima": {k: str(v) for k, v in plan.maxima.items()},
            "checks": [_check_args(c) for c in plan.checks],
        }
        if plan.requeue:
            body["rq"] = True
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
        return keys, [json.dumps(body, allow_nan=False), self._log_size, line, self._event_log_size]

    async def apply(self, plan: Plan) -> Outcome:
        try:
            keys, args = self.script_call(plan)
        except (TypeError, ValueError) as exc:
            raise Unrecordable(f"the event cannot be encoded for the store ({type(exc).__name__})") from None
        try:
            if self._wait_replicas:
                reply = await self._apply_and_wait(keys, args)
            else:
                reply = await self._script(keys=keys, args=args)
        except _ERRORS as exc:
            self.gate.refuse(WRITE, _why_not(exc))
            raise StoreUnavailable(type(exc).__name__) from exc
        except StoreUnavailable as exc:  # replicas did not confirm the write
            self.gate.refuse(WRITE, str(exc))
            raise
        if int(reply[0]) not in (2, _NEWER_LAYOUT):  # it wrote (a duplicate its log line): writes go through
            self.gate.allow(WRITE)
        if int(reply[0]) == 1:
            return Outcome(duplicate=True)
        if int(reply[0]) == 2:
            raise Unrecordable(reply[1].decode())
        if int(reply[0]) == _NEWER_LAYOUT:
            raise LayoutRefused(newer_reason(reply[1].decode()))
        return Outcome(duplicate=False, anomalies=[_record(r) for r in reply[1:]])

    async def apply_many(self, items: Sequence[Plan | EventArgs]) -> list[Outcome | Unrecordable | StoreUnavailable]:
        """Apply a batch with one apply_batch.lua call per BATCH_EVENTS events, in order: each event
        is still recorded atomically with its own result, as apply() would. An entry is
        StoreUnavailable when its call got no reply (or, with WAIT, when replicas did not confirm
        it): retrying it is safe, since an event that did run comes back a duplicate. Events the
        script leaves to the exact per-event script (its overflow pre-check) go through apply.lua."""
        results: list[Outcome | Unrecordable | StoreUnavailable] = [StoreUnavailable("no reply")] * len(items)
        # Each plan encoded on its own: one that cannot be fails alone, before any call.
        encoded: list[tuple[int, EventArgs]] = []
        for i, item in enumerate(items):
            try:
                event = item if isinstance(item, EventArgs) else event_args(item, self._prefix)
                check_encodable(event)
                encoded.append((i, event))
            except (TypeError, ValueError) as exc:
                results[i] = Unrecordable(f"the event cannot be encoded for the store ({type(exc).__name__})")
        for start in range(0, len(encoded), self._batch_events):
            batch = encoded[start:start + self._batch_events]
            replies = await self._apply_batch([args for _, args in batch])
            exact: list[int] = []
            for (i, _), result in zip(batch, replies, strict=True):
                if result is None:
                    exact.append(i)
                else:
                    results[i] = result
            if exact:
                left = set(exact)
                plans = [args.plan() for i, args in batch if i in left]
                for i, result in zip(exact, await self._apply_each(plans), strict=True):
                    results[i] = result
            if any(isinstance(results[i], StoreUnavailable) for i, _ in batch):
                break  # the store failed: the rest stay unapplied ("no reply"), in order
        return results

    async def _apply_batch(self, batch: Sequence[EventArgs]) -> list[Outcome | Unrecordable | StoreUnavailable | None]:
        """One apply_batch.lua call (+ WAIT): each event's result, or None for an event the script
        left to apply.lua (nothing of it written)."""
        keys = [self.counters_key, self.gauges_key, self.anomalies_key, self.events_key, self.layout_key,
                self.overflow_key]
        args = [str(self._log_size), str(self._event_log_size), str(len(batch))]
        for event in batch:
            keys += event.keys
            args += event.args
        command = ("EVALSHA", self._batch_script.sha, len(keys), *keys, *args)
        try:
            reply, confirmed = await self._call(command)
            if isinstance(reply, NoScriptError):  # a restarted or new master: nothing ran
                await self._redis.script_load(_BATCH_SCRIPT)
                reply, confirmed = await self._call(command)
        except _ERRORS as exc:
            self.gate.refuse(WRITE, _why_not(exc))
            return [StoreUnavailable(type(exc).__name__)] * len(batch)
        if isinstance(reply, Exception):
            self.gate.refuse(WRITE, _why_not(reply))
            return [StoreUnavailable(type(reply).__name__)] * len(batch)
        try:
            if int(reply[0]) == _NEWER_LAYOUT:
                return [LayoutRefused(newer_reason(reply[1].decode()))] * len(batch)
            per_event = reply[1:]
            if len(per_event) != len(batch):
                raise ValueError("one reply per event")
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            log.error("unreadable reply of the batch script (%s): its events are answered 503", type(exc).__name__)
            return [StoreUnavailable(f"unreadable reply ({type(exc).__name__})")] * len(batch)
        return [self._batch_result(r, confirmed) for r in per_event]

    def _batch_result(self, reply: Any, confirmed: int) -> Outcome | Unrecordable | StoreUnavailable | None:
        """One event's entry of an apply_batch.lua reply: as apply.lua's (_result), or None for
        an event left to apply.lua, or StoreUnavailable for one a failed command stopped."""
        if isinstance(reply, list) and reply and reply[0] == _EXACT:
            return None
        if isinstance(reply, list) and len(reply) == 2 and reply[0] == _FAILED:
            reason = f"ResponseError: {reply[1].decode(errors='replace').splitlines()[0][:200]}"
            self.gate.refuse(WRITE, reason)
            return StoreUnavailable(reason)
        return self._result(reply, confirmed)

    async def _call(self, command: tuple[Any, ...]) -> tuple[Any, int]:
        """`command` (its reply, or its error as a value) and, with WAIT set, how many replicas
        confirmed it: the PUBLISH before WAIT is a write after it, so WAIT covers duplicates'
        earlier writes too (see _apply_and_wait)."""
        if not self._wait_replicas:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.execute_command(*command)
                (reply,) = await pipe.execute(raise_on_error=False)
            return reply, 0
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.execute_command(*command)
            pipe.execute_command("PUBLISH", self.key("wait"), "1")
            pipe.execute_command("WAIT", self._wait_replicas, self._wait_timeout_ms)
            reply, _, confirmed = await pipe.execute(raise_on_error=False)
        if isinstance(confirmed, Exception):
            raise confirmed
        return reply, int(confirmed)

    async def _apply_each(self, plans: Sequence[Plan]) -> list[Outcome | Unrecordable | StoreUnavailable]:
        """apply.lua per plan, in one non-transactional pipeline (what apply_batch.lua leaves to
        it): each plan is still its own atomic script call with its own reply, in order. An entry
        is StoreUnavailable when its call got no reply (or, with WAIT, when replicas did not
        confirm the batch): retrying it is safe, since an event that did run comes back a duplicate."""
        results: list[Outcome | Unrecordable | StoreUnavailable] = [StoreUnavailable("no reply")] * len(plans)
        # Each plan encoded on its own: one that cannot be fails alone, before the pipeline.
        calls: dict[int, tuple[list[str], list[Any]]] = {}
        for i, plan in enumerate(plans):
            try:
                calls[i] = self.script_call(plan)
            except (TypeError, ValueError) as exc:
                results[i] = Unrecordable(f"the event cannot be encoded for the store ({type(exc).__name__})")
        todo = list(calls)
        for attempt in range(2):  # the second only after NOSCRIPT: a restarted or new master
            if not todo:
                break
            try:
                replies, confirmed = await self._pipelined([calls[i] for i in todo])
            except _ERRORS as exc:
                self.gate.refuse(WRITE, _why_not(exc))
                for i in todo:
                    results[i] = StoreUnavailable(type(exc).__name__)
                return results
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError) and not attempt:
                    missing.append(i)
                else:
                    results[i] = self._result(reply, confirmed)
            if not missing:
                break
            try:
                await self._redis.script_load(_SCRIPT)
            except _ERRORS as exc:
                self.gate.refuse(WRITE, _why_not(exc))
                for i in missing:
                    results[i] = StoreUnavailable(type(exc).__name__)
                return results
            todo = missing
        return results

    def _result(self, reply: Any, confirmed: int) -> Outcome | Unrecordable | StoreUnavailable:
        """One plan's entry of apply_many from its own reply: a bad reply fails its plan only. Keeps
        the write gate: a refused write closes it, a write that went through opens it."""
        if isinstance(reply, Exception):
            self.gate.refuse(WRITE, _why_not(reply))
            return StoreUnavailable(type(reply).__name__)
        try:
            if int(reply[0]) == 2:
                return Unrecordable(reply[1].decode())
            if int(reply[0]) == _NEWER_LAYOUT:
                return LayoutRefused(newer_reason(reply[1].decode()))
            if confirmed < self._wait_replicas:
                refusal = StoreUnavailable(f"{confirmed} of {self._wait_replicas} replicas confirmed the write in time")
                self.gate.refuse(WRITE, str(refusal))
                return refusal
            self.gate.allow(WRITE)
            if int(reply[0]) == 1:
                return Outcome(duplicate=True)
            return Outcome(duplicate=False, anomalies=[_record(r) for r in reply[1:]])
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            log.error("unreadable reply of the apply script (%s): the event is answered 503", type(exc).__name__)
            return StoreUnavailable(f"unreadable reply ({type(exc).__name__})")

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
        if int(reply[0]) not in (2, _NEWER_LAYOUT) and confirmed < self._wait_replicas:
            raise StoreUnavailable(f"{confirmed} of {self._wait_replicas} replicas confirmed the write in time")
        return reply

    async def snapshot(self, now: float, lapse_grace: int, lapse_horizon: int = LAPSE_HORIZON) -> Snapshot:
        cutoff, oldest = now - lapse_grace, now - lapse_horizon
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(self.layout_key)
                pipe.hgetall(self.counters_key)
                pipe.hgetall(self.gauges_key)
                for mode in LIVEMODES:
                    pipe.zcount(self._lapse_key(mode), oldest, cutoff)
                layout, counters, gauges, *lapsed = await pipe.execute()
            memory = await read_memory(self._redis, **await self._node())
        except _ERRORS as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        _check_layout(layout)
        return Snapshot(
            counters={k.decode(): int(v) for k, v in counters.items()},
            gauges={k.decode(): int(v) for k, v in gauges.items()},
            lapsed=dict(zip(LIVEMODES, (int(n) for n in lapsed), strict=True)),
            memory=memory,
        )

    async def _node(self) -> dict[str, Any]:
        """For a node-wide command (INFO, CONFIG GET): the cluster node that holds the store's slot."""
        if not isinstance(self._redis, RedisCluster):
            return {}
        await self._redis.initialize()  # a no-op once the slot map is known
        return {"target_nodes": self._redis.get_node_from_key(self.counters_key)}

    async def anomalies(self, limit: int) -> list[dict[str, Any]]:
        try:
            layout, raw = await self._read(self.anomalies_key, limit)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        _check_layout(layout)
        return [_record(r) for r in raw]

    async def events(self, limit: int) -> list[dict[str, Any]]:
        try:
            layout, raw = await self._read(self.events_key, limit)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        _check_layout(layout)
        return [json.loads(r) for r in raw]

    async def log_rejected(self, entry: LogEntry) -> None:
        line = json.dumps({**entry.as_dict(), "result": "rejected", "anomalies": []})
        try:
            _check_layout(await self._redis.get(self.layout_key))  # no write into a newer layout
            async with self._redis.pipeline(transaction=True) as pipe:  # MULTI: never an uncapped list
                pipe.lpush(self.events_key, line)
                pipe.ltrim(self.events_key, 0, self._event_log_size - 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def _read(self, key: str, limit: int) -> tuple[Any, Any]:
        """The layout version and the newest `limit` entries of a log list, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self.layout_key)
            pipe.lrange(key, 0, max(limit, 1) - 1)
            layout, raw = await pipe.execute()
        return layout, raw

    def _quarantine_keys(self, event_id: str, livemode: str) -> list[str]:
        return [self._event_key(event_id, livemode), self.counters_key, self.gauges_key, self.quarantine_key,
                self.quarantine_order_key, self.events_key, self.quarantine_bodies_key, self.layout_key]

    async def quarantine(self, record: Quarantine) -> bool:
        line = json.dumps(record.log.as_dict())[:-1]  # the script closes it
        args: list[str | int] = ["add", record.member, ENTRIES_SCHEME, record.dedup_ttl, encoded(record.entry),
                int(record.entry["received"] * 1000), self._quarantine_size, record.counter, DROPPED_SCHEME, line,
                self._event_log_size, record.body]
        try:
            keys = self._quarantine_keys(record.event_id, record.livemode)
            if self._wait_replicas:  # as apply(): 2xx only once the replicas hold it
                reply, confirmed = await self._waited(
                    ("EVALSHA", self._quarantine_script.sha, len(keys), *keys, *args))
                if isinstance(reply, NoScriptError):
                    await self._redis.script_load(_QUARANTINE_SCRIPT)
                    reply, confirmed = await self._waited(
                        ("EVALSHA", self._quarantine_script.sha, len(keys), *keys, *args))
                if isinstance(reply, Exception):
                    raise reply
                if confirmed < self._wait_replicas:
                    raise StoreUnavailable(
                        f"{confirmed} of {self._wait_replicas} replicas confirmed the write in time")
            else:
                reply = await self._quarantine_script(keys=keys, args=args)
        except _ERRORS as exc:
            self.gate.refuse(WRITE, _why_not(exc))
            raise StoreUnavailable(type(exc).__name__) from exc
        if int(reply[0]) == _NEWER_LAYOUT:
            raise LayoutRefused(newer_reason(reply[1].decode()))
        if int(reply[0]) == 2:
            raise Unrecordable(reply[1].decode())
        self.gate.allow(WRITE)
        return int(reply[0]) == 1

    async def quarantined(self, limit: int, bodies: bool = False) -> list[dict[str, Any]]:
        try:
            members = [m for m in await self._redis.zrange(self.quarantine_order_key, 0, max(limit, 1) - 1)
                       if isinstance(m, bytes | str)]
            if not members:
                return []
            async with self._redis.pipeline(transaction=True) as pipe:  # entries and bodies as of one moment
                pipe.hmget(self.quarantine_key, members)
                if bodies:
                    pipe.hmget(self.quarantine_bodies_key, members)
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        entries = []
        for i, raw in enumerate(replies[0]):
            if raw is None:
                continue  # released in between: gone
            entries.append(json.loads(raw))
            if bodies:
                entries[-1]["body"] = (replies[1][i] or b"").decode()
        return entries

    async def release(self, livemode: str, event_id: str) -> None:
        try:
            reply = await self._quarantine_script(keys=self._quarantine_keys(event_id, livemode),
                                                  args=["release", member(livemode, event_id), ENTRIES_SCHEME])
        except _ERRORS as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        if int(reply[0]) == _NEWER_LAYOUT:
            raise LayoutRefused(newer_reason(reply[1].decode()))

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
            _check_layout(await self._redis.get(self.layout_key))  # no write into a newer layout
            async with self._redis.pipeline(transaction=True) as pipe:
                for name, value in counters.items():
                    pipe.hincrby(self.counters_key, name, value)
                totals = await pipe.execute()
            # The batch script trusts the flag instead of reading every total (docs/redis.md).
            if any(abs(int(total)) >= OVERFLOW_FLAG_AT for total in totals):
                await self._redis.set(self.overflow_key, "1")
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def set_verdict(self, anomaly_id: str, verdict: str, at: int, counter: str) -> str | None:
        record = json.dumps({"verdict": verdict, "at": at})
        try:
            reply = await self._verdict_script(keys=[self.verdicts_key, self.counters_key, self.layout_key],
                                               args=[anomaly_id, verdict, record, counter, MAX_VERDICTS])
        except _ERRORS as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        if int(reply[0]) == _NEWER_LAYOUT:
            raise LayoutRefused(newer_reason(reply[1].decode()))
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
        """None when an event can be recorded now, else why not. Runs the apply script in its probe
        mode (writes nothing) with an event's keys, so a Redis that refuses scripts, a node that
        does not serve the slot or keys that span slots (CROSSSLOT) is not ready; while writes
        are refused (the write gate), writes and deletes a key of its own, and opens the gate
        when that goes through; then checks the eviction policy."""
        probe_keys = self._script_keys("probe", "false", "false", "-", "-", ["probe"])
        try:
            reply = await self._script(keys=probe_keys, args=["probe"])
        except _ERRORS as exc:
            return _why_not(exc)
        if self.gate.refusing(WRITE):
            await self._probe_write()
        if self.gate.reason is not None:
            return self.gate.reason
        try:
            eviction = await self.eviction_refusal()
            online = await self._replicas_online() if self._wait_replicas else 0
        except _ERRORS as exc:
            return _why_not(exc)
        if eviction is not None:
            return eviction
        if int(reply[0]) != 3:
            return f"unexpected probe reply {reply!r:.80}"
        try:
            _check_layout(await self._redis.get(self.layout_key))
        except LayoutRefused as exc:
            return str(exc)
        except (RedisError, OSError) as exc:
            return _why_not(exc)
        if online < self._wait_replicas:
            # The webhook would answer 503: WAIT cannot get the replicas it needs.
            return (f"{online} of the {self._wait_replicas} Redis replicas BILLINGWATCH_REDIS_WAIT_REPLICAS "
                    "asks for are online")
        return None

    async def _probe_write(self) -> None:
        """Whether Redis takes writes again (a full Redis freed, a replica promoted): only while
        the gate is closed, since each probe replicates and lands in the AOF."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self.key("probe"), b"\0" * PROBE_BYTES, px=10_000)
                pipe.delete(self.key("probe"))
                refused = [r for r in await pipe.execute(raise_on_error=False) if isinstance(r, Exception)]
            if refused:
                raise refused[0]  # Redis's own words, not the pipeline's wrapping
        except _ERRORS as exc:
            self.gate.refuse(WRITE, _why_not(exc))
        else:
            self.gate.allow(WRITE)

    async def eviction_refusal(self) -> str | None:
        """Why Redis's eviction policy is refused (start-up and /ready), else None. What could not be
        checked, and a policy let through by BILLINGWATCH_REDIS_ALLOW_EVICTION, are logged once
        each as warnings. Raises what the connection raises."""
        reading = await read_policy(self._redis, **await self._node())
        if reading.unchecked is not None:
            self._warn_once(reading.unchecked)
        if reading.policy is None or reading.policy == NOEVICTION:
            return None
        if self._allow_eviction:
            self._warn_once(f"{eviction_refusal(reading.policy).partition(';')[0]}; running anyway because "
                            f"{ALLOW_EVICTION}=1")
            return None
        return eviction_refusal(reading.policy)

    def _warn_once(self, line: str) -> None:
        if line not in self._logged:
            self._logged.add(line)
            log.warning("%s", line)

    async def _replicas_online(self) -> int:
        """Replicas of the master that stream its writes (INFO replication: slaveN:...,state=online)."""
        info = await self._redis.info("replication")
        return sum(1 for key, value in info.items()
                   if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online")

    def migration(self) -> Migration:
        """The in-place migration of this store to the layout this release writes (store/layout.py)."""
        return Migration(self._redis, self._tag)

    async def upkeep_layout(self) -> Report | int:
        """store/layout.py upkeep(): migrate, or correct what a layout-1 replica wrote; then
        mark_overflow()."""
        result = await upkeep(self._redis, self._tag)
        await self.mark_overflow()
        return result

    async def mark_overflow(self) -> bool:
        """Set the overflow flag if a total already holds 2^62 or more in absolute value: a
        replica of an earlier release, which keeps no flag, may have taken it there (at start
        and in the layout upkeep, so a rolling update ends with the flag right). True if set."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hvals(self.counters_key)
            pipe.hvals(self.gauges_key)
            counters, gauges = await pipe.execute()
        if not any(abs(int(v)) >= OVERFLOW_FLAG_AT for v in (*counters, *gauges)):
            return False
        await self._redis.set(self.overflow_key, "1")
        return True

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()
