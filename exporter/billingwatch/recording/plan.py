"""What recording one event does to the store, as data.

The webhook builds a Plan from an event (pure), and a store applies the whole Plan in one
atomic step: event-id dedup first, then every counter, check and subscription update. Checks
are the store operations detectors are written in, so detector state changes in the same
transaction as the counters, in one round trip.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

CheckOp = Literal["once", "window", "distinct"]


@dataclass(frozen=True)
class Anomaly:
    """An anomaly record as /api/anomalies shows it; the store adds the related ids it matched."""

    detector: str
    severity: str
    livemode: bool
    event_id: str
    event_type: str
    event_created: int
    summary: str
    customer: str | None = None
    charge: str | None = None
    invoice: str | None = None
    subscription: str | None = None
    amount: int | None = None  # minor units
    currency: str | None = None
    history: bool = False  # found by an imported (replayed) event, not by live traffic

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Check:
    """One store operation a detector asks for; `counters` and `anomaly` apply when it hits.

    - once:     hits the first time `key` is seen (kept `ttl` seconds).
    - window:   adds `member` at time `at` to the set `key`; hits when the member is new and
                another member lies within `window` seconds of `at` (those are the related ids).
    - distinct: adds `member` to the set `key`; hits when the member is new and the set already
                held others (those are the related ids).
    Sets keep at most `cap` members (the oldest go first) and expire `ttl` seconds after their
    last change.
    """

    op: CheckOp
    key: str
    ttl: int
    member: str = ""
    at: int = 0
    window: int = 0
    cap: int = 64
    counters: dict[str, int] = field(default_factory=dict)
    anomaly: Anomaly | None = None


@dataclass(frozen=True)
class SubscriptionState:
    """A subscription snapshot; the store keeps the newest by event time and derives the gauges."""

    id: str
    livemode: str
    at: int  # event created: an older snapshot never overwrites a newer one
    status: str
    mrr_currency: str
    mrr_milli: int  # monthly amount in thousandths of the minor unit: integer, so no drift
    period_end: int
    ttl: int
    ended_counter: str = ""  # the counter field to bump when it ends; "" for none (history)


@dataclass(frozen=True)
class SubscriptionPayment:
    """A paid invoice of a subscription: it is not lapsed for the period that began before `at`."""

    id: str
    livemode: str
    at: int
    ttl: int


@dataclass(frozen=True)
class Plan:
    event_id: str
    dedup_ttl: int
    livemode: str = "false"  # "true"/"false": live and test events never share a dedup key
    counters: dict[str, int] = field(default_factory=dict)
    maxima: dict[str, int] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    subscription: SubscriptionState | None = None
    payment: SubscriptionPayment | None = None


@dataclass(frozen=True)
class Outcome:
    duplicate: bool
    anomalies: list[dict[str, Any]] = field(default_factory=list)
