"""The store contract. Two implementations: Redis (production) and in-process (embedded default)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from billingwatch.recording.plan import LogEntry, Plan
from billingwatch.recording.quarantine import Quarantine
from billingwatch.store.write_gate import WriteGate

LAPSE_HORIZON = 400 * 86400  # the default subscription memory (BILLINGWATCH_SUBSCRIPTION_TTL_SECONDS)
# What a store refuses up front rather than fail half-way (apply.lua has the same numbers).
# Totals stay within +-COUNTER_LIMIT: 2^63 - 1 is 9.22e18, and the gap is far wider than the
# rounding of Lua's doubles up there, so the script can compare safely.
COUNTER_LIMIT = 9 * 10**18
MAX_TTL = 10**10  # seconds; EXPIRE refuses a time that overflows in milliseconds
MAX_CHECKS = 1000
# A sum check's amount and threshold: sums of up to a few thousand such amounts stay exact in
# Lua's doubles (2^53 is 9.0e15).
MAX_AMOUNT = 10**12
MAX_SUM = 10**15
# The track op (apply.lua CLOSED): a closed member's score is its closing time minus this.
TRACK_CLOSED = 10**11
# A subscription's MRR (each gauge amount it holds) and a customer's MRR in one currency, in
# thousandths of a minor unit: the script computes a customer's MRR and its movements in Lua's
# doubles, exact below 2^53 (9.007e15).
MAX_SUBSCRIPTION_MRR = 10**15
MAX_CUSTOMER_MRR = 9 * 10**15
# Anomalies with a verdict (the feedback buttons of /anomalies): people's clicks, but bounded all
# the same; a new verdict beyond it is refused (Unrecordable), a changed one is still taken.
MAX_VERDICTS = 100_000


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer; nothing may be acknowledged."""


class LayoutRefused(StoreUnavailable):
    """The store holds a layout newer than this release knows (store/layout.py): it writes nothing
    there and answers 503 with this reason until it is upgraded."""


class Unrecordable(Exception):
    """The store refused the event before writing anything (a total would leave its range):
    retrying the same event cannot help, so it is not StoreUnavailable."""


@dataclass(frozen=True)
class Outcome:
    """What applying a plan did: nothing for a duplicate, else the anomaly records its checks hit."""

    duplicate: bool
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    failed_detectors: tuple[str, ...] = ()  # set by the Recorder from the plan, not by a store


@dataclass(frozen=True)
class StoreMemory:
    """What Redis reports of its memory (INFO memory and stats), for the store's gauges."""

    used_bytes: int
    max_bytes: int  # maxmemory; 0: no limit
    evicted_keys: int  # since the Redis server started


@dataclass(frozen=True)
class Snapshot:
    """The store-held figures at scrape time."""

    counters: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, int] = field(default_factory=dict)
    lapsed: dict[str, int] = field(default_factory=dict)  # livemode label → count
    # Redis only, when INFO is allowed. The server's figures, not the store's state: two snapshots
    # of the same state compare equal whatever else the server holds.
    memory: StoreMemory | None = field(default=None, compare=False)


class Store(Protocol):
    kind: str
    gate: WriteGate  # why writes are refused now (store/write_gate.py): /ready and billingwatch_store_up read it

    async def apply(self, plan: Plan) -> Outcome:
        """Record one event atomically: nothing but its log line (result duplicate) if its id was
        recorded before. Raises Unrecordable, with nothing written, when recording it would take a
        total out of range."""

    async def apply_many(self, plans: Sequence[Plan]) -> list[Outcome | Unrecordable | StoreUnavailable]:
        """Apply each plan as apply() does, in order, as one batch (one round trip to Redis); each
        entry is the plan's outcome, or the error apply() would raise for it. StoreUnavailable: no
        answer for that plan; applying it again is safe (it is a duplicate if it ran)."""

    async def snapshot(self, now: float, lapse_grace: int, lapse_horizon: int = LAPSE_HORIZON) -> Snapshot:
        """Store-held figures. Lapsed: watched subscriptions whose period ended between
        `lapse_horizon` and `lapse_grace` seconds ago (older entries belong to subscriptions the
        store has forgotten)."""

    async def anomalies(self, limit: int) -> list[dict[str, Any]]:
        """The newest anomaly records first."""

    async def events(self, limit: int) -> list[dict[str, Any]]:
        """The recent-events log, newest first: each line a LogEntry's fields plus `result`
        (accepted, duplicate or rejected) and `anomalies` (the detectors that hit)."""

    async def log_rejected(self, entry: LogEntry) -> None:
        """Add the log line of an event refused before the store (result rejected). Touches nothing
        else; raises StoreUnavailable."""

    async def quarantine(self, record: Quarantine) -> bool:
        """Keep a signed event that could not be recorded, and its dedup key (marked quarantined),
        in one atomic step; drop the oldest entries beyond the cap, counting them. True (nothing
        but its log line written) when the id was recorded or quarantined before. Raises
        Unrecordable (nothing written) or StoreUnavailable."""

    async def quarantined(self, limit: int, bodies: bool = False) -> list[dict[str, Any]]:
        """The quarantine's entries (recording/quarantine.py), oldest first, at most `limit`; with
        `bodies`, each with its `body` (the bodies are kept apart: listing never reads them)."""

    async def release(self, livemode: str, event_id: str) -> None:
        """Remove an entry that was recorded since (by requeue); its dedup key stays."""

    async def recorded(self, events: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each (event id, livemode label) has been recorded (within the dedup retention)."""

    async def increment(self, counters: dict[str, int]) -> None:
        """Add to store-held counters outside an event (e.g. missed events found by reconcile)."""

    async def set_verdict(self, anomaly_id: str, verdict: str, at: int, counter: str) -> str | None:
        """Store a person's verdict on an anomaly, replacing an earlier one, and add 1 to the
        counter field `counter` in the same atomic step when it changes (repeating the current
        verdict writes nothing). Returns the verdict it replaced, or None. Raises Unrecordable,
        with nothing written, for a new anomaly beyond MAX_VERDICTS; StoreUnavailable."""

    async def verdicts(self, anomaly_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored verdicts of these anomalies: id → {"verdict", "at"} (unix seconds)."""

    async def can_record(self) -> str | None:
        """None when an event can be recorded now, else the reason it cannot (for /ready): the
        gate's reason first. Redis tries a small write of its own (never an event's) and opens
        the gate's "write" source when it succeeds."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
