"""The in-process store: the embedded default when no REDIS_URL is set.

Same semantics as the Redis store (the same contract tests run against both), but its state
lives in this process: not shared between replicas, lost on restart. Each apply runs without
an await, so on the event loop it is as atomic as the Redis script.
"""

import itertools
import json
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from billingwatch.metrics.labels import LIVEMODES
from billingwatch.recording.plan import Check, LogEntry, Plan, SubscriptionPayment, SubscriptionState, fill, movement
from billingwatch.recording.quarantine import DROPPED_SCHEME, ENTRIES_SCHEME, LIVEMODE_SLOT, Quarantine, member
from billingwatch.store.contract import (
    COUNTER_LIMIT,
    LAPSE_HORIZON,
    MAX_AMOUNT,
    MAX_CHECKS,
    MAX_CUSTOMER_MRR,
    MAX_SUBSCRIPTION_MRR,
    MAX_SUM,
    MAX_TTL,
    MAX_VERDICTS,
    TRACK_CLOSED,
    Outcome,
    Snapshot,
    StoreUnavailable,
    Unrecordable,
)
from billingwatch.store.layout import LAYOUT_VERSION
from billingwatch.store.write_gate import WriteGate

_SWEEP_EVERY = 1024
_NEVER = math.inf  # the expiry of state that holds money (layout 2, store/layout.py)


def _holds_money(state: dict[str, Any]) -> bool:
    """A subscription held in the gauges, or a customer holding MRR (apply.lua holds_money)."""
    return any(v > 0 for v in state.get("g", {}).values()) or any(
        v > 0 for k, v in state.items() if k.startswith("m:") and isinstance(v, int))


def _unencodable(record: dict[str, Any]) -> bool:
    try:
        json.dumps(record, allow_nan=False)
    except (TypeError, ValueError):
        return True
    return False


@dataclass
class _SubscriptionChange:
    """What replacing a subscription's kept snapshot changes (apply.lua computes the same)."""

    gauges: list[tuple[str, int]] = field(default_factory=list)
    counters: list[tuple[str, int]] = field(default_factory=list)
    customer: dict[str, int] = field(default_factory=dict)  # "m:<currency>": MRR, "p:<currency>": 1 (paid)
    ended_before: bool = False


def _newer(sub: SubscriptionState, state: dict[str, Any]) -> bool:
    """Whether the snapshot replaces the kept one: a later event, or the same second and no lower rank."""
    return "at" not in state or (sub.at, sub.rank) >= (state["at"], state.get("rk", 0))


def _change(sub: SubscriptionState, state: dict[str, Any], customer: dict[str, int]) -> _SubscriptionChange:
    held_before = state.get("g", {})
    change = _SubscriptionChange(ended_before="at" in state and not held_before)
    change.gauges += [(name, -value) for name, value in held_before.items()]
    if sub.held:
        change.gauges += sub.gauges
    elif sub.ended_counter and not change.ended_before:
        change.counters.append((sub.ended_counter, 1))
    # The customer's MRR per currency: the kept snapshot's share out, this one's in.
    deltas: dict[str, int] = {}
    if state.get("cm", 0) > 0:
        deltas[state["cur"]] = -state["cm"]
    if sub.mrr_currency:
        deltas[sub.mrr_currency] = deltas.get(sub.mrr_currency, 0) + sub.contribution
    schemes = sub.movement_schemes
    for currency, delta in deltas.items():
        if delta == 0:
            continue
        before = customer.get("m:" + currency, 0)
        after = max(before + delta, 0)
        change.customer["m:" + currency] = after
        if after > 0:
            change.customer["p:" + currency] = 1
        if (before > 0) != (after > 0):
            change.gauges.append((fill(sub.paying_scheme, currency), 1 if after > 0 else -1))
        moved = movement(before, after, bool(customer.get("p:" + currency)))
        if moved and schemes:  # no scheme for history: it moves no movement counter
            kind, amount = moved
            change.counters += [(fill(schemes[0], currency, kind), amount), (fill(schemes[1], currency, kind), 1)]
    return change


class MemoryStore:
    kind = "memory"

    def __init__(self, anomaly_log_size: int = 1000, clock: Callable[[], float] = time.time,
                 event_log_size: int = 5000, quarantine_size: int = 1000) -> None:
        self._clock = clock
        self.gate = WriteGate()  # never closed by this store itself; other checks may close it
        self._quarantine: dict[str, dict[str, Any]] = {}  # member → entry, oldest first
        self._quarantine_bodies: dict[str, str] = {}  # member → body
        self._quarantine_size = quarantine_size
        self._marked: set[str] = set()  # event keys a quarantine wrote (Redis: the value 'q')
        self._expiry: dict[str, float] = {}  # key → unix time it expires
        self._sets: dict[str, dict[str, int]] = {}  # window/distinct sets: member → score
        self._subs: dict[str, dict[str, Any]] = {}
        self._customers: dict[str, dict[str, int]] = {}  # "u:<livemode>:<customer>" → MRR and paid, per currency
        self._lapse: dict[str, dict[str, int]] = {mode: {} for mode in LIVEMODES}
        self._counters: dict[str, int] = {}
        self._gauges: dict[str, int] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=anomaly_log_size)
        self._events: deque[dict[str, Any]] = deque(maxlen=event_log_size)  # newest last
        self._verdicts: dict[str, dict[str, Any]] = {}  # anomaly id → {"verdict", "at"}
        self._applied = 0
        self.layout = LAYOUT_VERSION  # a new process holds the layout it writes: nothing to migrate

    # -- keys with a TTL: "e:<livemode>:<event>", "c:<check>", "s:<livemode>:<subscription>",
    #    "u:<livemode>:<customer>"

    def _alive(self, key: str) -> bool:
        expires = self._expiry.get(key)
        if expires is None:
            return False
        if expires <= self._clock():
            self._drop(key)
            return False
        return True

    def _drop(self, key: str) -> None:
        self._expiry.pop(key, None)
        self._marked.discard(key)
        self._sets.pop(key, None)
        if key.startswith("s:"):
            self._subs.pop(key, None)
        if key.startswith("u:"):
            self._customers.pop(key, None)

    def _sweep(self) -> None:
        now = self._clock()
        for key in [k for k, t in self._expiry.items() if t <= now]:
            self._drop(key)

    def _set_once(self, key: str, ttl: int) -> bool:
        if self._alive(key):
            return False
        self._expiry[key] = self._clock() + ttl
        return True

    # -- the contract

    async def apply_many(self, plans: Sequence[Plan]) -> list[Outcome | Unrecordable | StoreUnavailable]:
        results: list[Outcome | Unrecordable | StoreUnavailable] = []
        for plan in plans:
            try:
                results.append(await self.apply(plan))
            except Unrecordable as exc:
                results.append(exc)
        return results

    async def apply(self, plan: Plan) -> Outcome:
        self._applied += 1
        if self._applied % _SWEEP_EVERY == 0:
            self._sweep()
        event_key = f"e:{plan.livemode}:{plan.event_id}"
        if self._alive(event_key) and not (plan.requeue and event_key in self._marked):
            self._log_line(plan.log, "duplicate", [])
            return Outcome(duplicate=True)
        refusal = self._refusal(plan)
        if refusal is not None:
            raise Unrecordable(refusal)
        self._marked.discard(event_key)
        self._expiry[event_key] = self._clock() + plan.dedup_ttl
        for name, value in plan.counters.items():
            self._counters[name] = self._counters.get(name, 0) + value
        for name, value in plan.maxima.items():
            if name not in self._gauges or value > self._gauges[name]:
                self._gauges[name] = value
        fired = [record for check in plan.checks if (record := self._check(check)) is not None]
        if plan.subscription is not None:
            self._subscription(plan.subscription)
        if plan.payment is not None:
            self._payment(plan.payment)
        self._log_line(plan.log, "accepted", [str(record["detector"]) for record in fired])
        return Outcome(duplicate=False, anomalies=fired)

    async def quarantine(self, record: Quarantine) -> bool:
        """As quarantine.lua: the dedup key (marked) and the entry, the oldest beyond the cap dropped."""
        event_key = f"e:{record.livemode}:{record.event_id}"
        if self._alive(event_key) or record.member in self._quarantine:
            self._log_line(record.log, "duplicate", [])
            return True
        if not 1 <= record.dedup_ttl <= MAX_TTL:
            raise Unrecordable("a retention (TTL) is out of range")
        self._expiry[event_key] = self._clock() + record.dedup_ttl
        self._marked.add(event_key)
        self._quarantine[record.member] = dict(record.entry)
        self._quarantine_bodies[record.member] = record.body
        self._gauge_add(ENTRIES_SCHEME.replace(LIVEMODE_SLOT, record.livemode), 1)
        self._counters[record.counter] = self._counters.get(record.counter, 0) + 1
        while len(self._quarantine) > self._quarantine_size:
            oldest = next(iter(self._quarantine))
            del self._quarantine[oldest], self._quarantine_bodies[oldest]
            mode = oldest.split(":", 1)[0]
            self._gauge_add(ENTRIES_SCHEME.replace(LIVEMODE_SLOT, mode), -1)
            dropped = DROPPED_SCHEME.replace(LIVEMODE_SLOT, mode)
            self._counters[dropped] = self._counters.get(dropped, 0) + 1
        self._log_line(record.log, "quarantined", [])
        return False

    async def quarantined(self, limit: int, bodies: bool = False) -> list[dict[str, Any]]:
        return [{**entry, "body": self._quarantine_bodies[name]} if bodies else dict(entry)
                for name, entry in itertools.islice(self._quarantine.items(), max(limit, 1))]

    async def release(self, livemode: str, event_id: str) -> None:
        self._quarantine_bodies.pop(member(livemode, event_id), None)
        if self._quarantine.pop(member(livemode, event_id), None) is not None:
            self._gauge_add(ENTRIES_SCHEME.replace(LIVEMODE_SLOT, livemode), -1)

    def _log_line(self, entry: LogEntry | None, result: str, anomalies: list[str]) -> None:
        if entry is not None:
            self._events.append({**entry.as_dict(), "result": result, "anomalies": anomalies})

    def _refusal(self, plan: Plan) -> str | None:
        """Why recording the plan could not complete (the Redis script's checks), else None."""
        sub = plan.subscription
        # A subscription's amounts first: the script computes its change from them in doubles.
        if sub is not None and any(not 0 <= value <= MAX_SUBSCRIPTION_MRR
                                   for value in (sub.contribution, *(v for _, v in sub.gauges))):
            return "a subscription's mrr is out of range"
        if len(plan.checks) > MAX_CHECKS:
            return "too many checks in one event"
        if any(_unencodable(c.anomaly.as_dict()) for c in plan.checks if c.anomaly is not None):
            # Kept, it would make every /api/anomalies answer fail until it left the log.
            return "an anomaly record is not JSON"
        ttls = [plan.dedup_ttl, *(c.ttl for c in plan.checks)]
        ttls += [x.ttl for x in (plan.subscription, plan.payment) if x is not None]
        ttls += [plan.subscription.customer_ttl] if plan.subscription and plan.subscription.customer_ttl else []
        if any(not 1 <= ttl <= MAX_TTL for ttl in ttls):
            return "a retention (TTL) is out of range"
        if any(len(c.gauges) != 2 or not 0 <= c.at < TRACK_CLOSED for c in plan.checks if c.op == "track"):
            return "a track check needs two gauge fields and a time"
        sums = [c for c in plan.checks if c.op == "sum"]
        if any(not (0 <= c.amount <= MAX_AMOUNT and 0 <= c.threshold <= MAX_SUM) for c in sums):
            return "a sum check's amount or threshold is out of range"
        # Each field's positive and negative increments apart: the range holds whichever checks hit.
        counters: dict[str, list[int]] = {}
        gauges: dict[str, list[int]] = {}

        def add(deltas: dict[str, list[int]], name: str, value: int) -> None:
            deltas.setdefault(name, [0, 0])[0 if value > 0 else 1] += value

        for name, value in plan.counters.items():
            add(counters, name, value)
        for check in plan.checks:
            for name, value in check.counters.items():
                add(counters, name, value)
            if check.anomaly is not None:
                add(counters, check.anomaly_counter, 1)
        if sub is not None:
            state = self._sub_state(sub)
            if _newer(sub, state):
                change = _change(sub, state, self._customer(sub))
                if any(value > MAX_CUSTOMER_MRR for value in change.customer.values()):
                    return "a customer's mrr would leave the range the store computes exactly"
                for name, value in change.gauges:
                    add(gauges, name, value)
                for name, value in change.counters:
                    add(counters, name, value)
        for deltas, held in ((counters, self._counters), (gauges, self._gauges)):
            for name, (up, down) in deltas.items():
                current = held.get(name, 0)
                if current + up > COUNTER_LIMIT or current + down < -COUNTER_LIMIT:
                    return f"total {name} would leave the range a 64-bit counter can hold"
        return None

    def _track(self, key: str, check: Check) -> None:
        """The track op (apply.lua track()): open members scored by their opening time, closed ones
        kept as tombstones below every time; sets the open count and earliest opening time."""
        if not self._alive(key):
            self._sets.pop(key, None)
        members = self._sets.setdefault(key, {})
        score = members.get(check.member)
        if check.amount == 1:
            if score is None:
                members[check.member] = check.at
        elif score is None or score >= 0:
            members[check.member] = check.at - TRACK_CLOSED
        if len(members) > check.cap:
            for _, oldest in sorted((s, m) for m, s in members.items())[: len(members) - check.cap]:
                del members[oldest]
        self._expiry[key] = self._clock() + check.ttl
        opened = [s for s in members.values() if s >= 0]
        count_field, oldest_field = check.gauges
        self._gauges[count_field] = len(opened)
        self._gauges[oldest_field] = min(opened, default=0)

    def _check(self, check: Check) -> dict[str, Any] | None:
        """Run one check; return its anomaly record when it hits with one."""
        key = "c:" + check.key
        related: list[str] | None = None
        gap: int | None = None
        if check.op == "once":
            hit = self._set_once(key, check.ttl)
        elif check.op == "track":
            self._track(key, check)
            return None
        elif check.op == "sum":
            hit, related = self._sum(key, check)
        else:
            if not self._alive(key):
                self._expiry[key] = self._clock() + check.ttl
            members = self._sets.setdefault(key, {})
            if check.member not in members:
                if check.op == "window":
                    lo, hi = check.at - check.window, check.at + check.window
                    near = sorted((s, m) for m, s in members.items() if lo <= s <= hi)
                    related = [m for _, m in near]
                    gap = min((abs(check.at - s) for s, _ in near), default=None)
                else:
                    related = [m for _, m in sorted((s, m) for m, s in members.items())]
                hit = bool(related)
                members[check.member] = check.at
                if len(members) > check.cap:
                    for _, oldest in sorted((s, m) for m, s in members.items())[: len(members) - check.cap]:
                        del members[oldest]
                self._expiry[key] = self._clock() + check.ttl
            else:
                hit = False
                if check.op == "distinct" and check.at < members[check.member]:
                    members[check.member] = check.at
        if not hit:
            return None
        for name, value in check.counters.items():
            self._counters[name] = self._counters.get(name, 0) + value
        if check.anomaly is None:
            return None
        # A JSON copy, as the Redis store keeps it: what /api/anomalies serves is plain JSON.
        record: dict[str, Any] = json.loads(json.dumps(check.anomaly.as_dict()))
        if related is not None:
            record["related"] = related
        if check.gap_detail and gap is not None:
            record["details"] = {**(record.get("details") or {}), check.gap_detail: gap}
        self._log.appendleft(record)
        counter = check.anomaly_counter
        self._counters[counter] = self._counters.get(counter, 0) + 1
        return record

    def _sum(self, key: str, check: Check) -> tuple[bool, list[str] | None]:
        """The sum op (recording/plan.py Check); members are "<id>|<amount>", as in apply.lua."""
        if not self._alive(key):
            self._expiry[key] = self._clock() + check.ttl
        members = self._sets.setdefault(key, {})
        member = f"{check.member}|{check.amount}"
        if member in members:
            return False, None
        best, best_members = -1, []
        lo = check.at - check.window
        for start in [lo, check.at, *(s for s in members.values() if lo <= s <= check.at)]:
            inside = sorted((s, m) for m, s in members.items() if start <= s <= start + check.window)
            total = sum(int(m.rsplit("|", 1)[1]) for _, m in inside)
            if total > best:
                best, best_members = total, [m.rsplit("|", 1)[0] for _, m in inside]
        members[member] = check.at
        if len(members) > check.cap:
            for _, oldest in sorted((s, m) for m, s in members.items())[: len(members) - check.cap]:
                del members[oldest]
        self._expiry[key] = self._clock() + check.ttl
        return best < check.threshold <= best + check.amount, best_members or None

    def _gauge_add(self, name: str, value: int) -> None:
        self._gauges[name] = self._gauges.get(name, 0) + value

    def _sub_state(self, sub: SubscriptionState) -> dict[str, Any]:
        key = f"s:{sub.livemode}:{sub.id}"
        return (self._subs.get(key) if self._alive(key) else None) or {}

    def _customer(self, sub: SubscriptionState) -> dict[str, int]:
        key = f"u:{sub.livemode}:{sub.customer_key}"
        return (self._customers.get(key) if self._alive(key) else None) or {}

    def _subscription(self, sub: SubscriptionState) -> None:
        key = f"s:{sub.livemode}:{sub.id}"
        state = self._sub_state(sub)
        if not _newer(sub, state):
            return  # an older snapshot never overwrites a newer one
        customer = self._customer(sub)
        change = _change(sub, state, customer)
        for name, value in change.gauges:
            self._gauge_add(name, value)
        for name, value in change.counters:  # no end or movement counter for history
            self._counters[name] = self._counters.get(name, 0) + value
        customer = {**customer, **change.customer}
        if customer:  # kept as long as its subscriptions, from its last change
            customer_key = f"u:{sub.livemode}:{sub.customer_key}"
            self._customers[customer_key] = customer
            self._expiry[customer_key] = self._keep(customer, sub.customer_ttl or sub.ttl)
        # What it added, to take back later without knowing how the fields are named.
        state.update(
            at=sub.at, rk=sub.rank, g=dict(sub.gauges), cur=sub.mrr_currency, cm=sub.contribution,
            end=sub.period_end,
        )
        self._subs[key] = state
        self._expiry[key] = self._keep(state, sub.ttl)
        watch = self._lapse[sub.livemode]
        if sub.lapse_watched and sub.period_end > 0 and state.get("paid", 0) < sub.period_end:
            watch[sub.id] = sub.period_end
        else:
            watch.pop(sub.id, None)

    def _keep(self, state: dict[str, Any], ttl: int) -> float:
        """When state expires: never while it holds money (layout 2), else `ttl` from now."""
        return _NEVER if _holds_money(state) else self._clock() + ttl

    def _payment(self, pay: SubscriptionPayment) -> None:
        key = f"s:{pay.livemode}:{pay.id}"
        state = self._subs.get(key) if self._alive(key) else None
        if state is None:
            state = self._subs[key] = {}
            self._expiry[key] = self._clock() + pay.ttl
        if "paid" in state and pay.at <= state["paid"]:
            return
        state["paid"] = pay.at
        self._expiry[key] = self._keep(state, pay.ttl) if _holds_money(state) else max(
            self._expiry[key], self._clock() + pay.ttl)
        watch = self._lapse[pay.livemode]
        if pay.id in watch and watch[pay.id] <= pay.at:
            del watch[pay.id]

    async def snapshot(self, now: float, lapse_grace: int, lapse_horizon: int = LAPSE_HORIZON) -> Snapshot:
        cutoff, oldest = now - lapse_grace, now - lapse_horizon
        return Snapshot(
            counters=dict(self._counters),
            gauges=dict(self._gauges),
            lapsed={mode: sum(1 for end in w.values() if oldest <= end <= cutoff) for mode, w in self._lapse.items()},
        )

    async def anomalies(self, limit: int) -> list[dict[str, Any]]:
        return list(self._log)[: max(limit, 1)]

    async def events(self, limit: int) -> list[dict[str, Any]]:
        newest = itertools.islice(reversed(self._events), max(limit, 1))
        return [{**line, "anomalies": list(line["anomalies"])} for line in newest]

    async def log_rejected(self, entry: LogEntry) -> None:
        self._log_line(entry, "rejected", [])

    async def recorded(self, events: Sequence[tuple[str, str]]) -> list[bool]:
        return [self._alive(f"e:{livemode}:{event_id}") for event_id, livemode in events]

    async def increment(self, counters: dict[str, int]) -> None:
        for name, value in counters.items():
            self._counters[name] = self._counters.get(name, 0) + value

    async def set_verdict(self, anomaly_id: str, verdict: str, at: int, counter: str) -> str | None:
        old = self._verdicts.get(anomaly_id)
        previous = None if old is None else str(old["verdict"])
        if previous == verdict:
            return previous
        if old is None and len(self._verdicts) >= MAX_VERDICTS:
            raise Unrecordable(f"{MAX_VERDICTS} anomalies already have a verdict")
        self._verdicts[anomaly_id] = {"verdict": verdict, "at": at}
        self._counters[counter] = self._counters.get(counter, 0) + 1
        return previous

    async def verdicts(self, anomaly_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {i: dict(self._verdicts[i]) for i in anomaly_ids if i in self._verdicts}

    async def can_record(self) -> str | None:
        return self.gate.reason

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
