"""Recording one Stripe event, as data: the Plan types, and plan_event() that builds a Plan. Pure.

plan_event() turns an event into everything recording it changes: counters, subscription
state, detector checks. A store applies the whole Plan in one atomic step: event-id dedup
first, then every counter, check and subscription update. Checks are the store operations
detectors are written in, so detector state changes in the same transaction as the counters,
in one round trip. The plan names every store field it moves (metrics/fields.py), so the store
needs no vocabulary of its own.
"""

import bisect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

from billingwatch.metrics import families as fam
from billingwatch.metrics import fields
from billingwatch.metrics.labels import (
    CHARGE_EVENTS,
    DECLINE_REASONS,
    DISPUTE_REASONS,
    ENDED_STATUSES,
    FRAUD_TYPES,
    INVOICE_ATTEMPTS,
    INVOICE_PAID_EVENTS,
    LIVE_STATUSES,
    MRR_STATUSES,
    OTHER_PLAN,
    REFUND_EVENTS,
    SIGNAL_EVENTS,
    SUBSCRIPTION_EVENTS,
    event_type_label,
    known,
    livemode_label,
)
from billingwatch.money import monthly_amount
from billingwatch.recording.detector_output import checked
from billingwatch.recording.events import (
    Event,
    InvalidEvent,
    Refund,
    SubscriptionItem,
    amount_of,
    charge_of,
    currency_of,
    customer_id,
    dispute_of,
    early_fraud_warning_of,
    invoice_of,
    list_data,
    object_id,
    refund_of,
    short_text,
    subscription_of,
)
from billingwatch.recording.signals import REVIEW_CAP, SignalChanges, signal_changes

if TYPE_CHECKING:  # the detectors build Checks: importing them here at run time would be a cycle
    from billingwatch.detectors import Context, Detector

CheckOp = Literal["once", "window", "distinct", "sum", "track"]
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]{0,47}")


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
    # The Stripe Connect account the event is about (event.account); None for the platform's own.
    account: str | None = None
    # What else the detector reports (e.g. prices and quantities before and after): JSON values,
    # kept exactly by both stores (the Redis one carries it as one JSON string).
    details: dict[str, Any] | None = None

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
    - sum:      adds `member` worth `amount` at time `at` to the set `key`; hits when the member
                is new and takes the largest total of a `window`-second span holding `at` from
                below `threshold` to at least it (those members are the related ids). A member
                is its id and amount: a redelivered one adds nothing.
    - track:    (recording/signals.py only, not for detectors) `amount` 1: adds `member` opened at
                `at` to the set `key` unless it is there or closed; 0: marks it closed. Never hits;
                sets `gauges` (open-now field, oldest-open field) to the open members' count and
                their earliest `at` (0: none). docs/redis.md, store/apply.lua.
    Sets keep at most `cap` members (the oldest go first) and expire `ttl` seconds after their
    last change. `gap_detail` (window): the key of the anomaly's details that gets the seconds
    between `at` and the nearest related member, which only the store knows.
    """

    op: CheckOp
    key: str
    ttl: int
    member: str = ""
    at: int = 0
    window: int = 0
    cap: int = 64
    amount: int = 0  # sum: 0..MAX_AMOUNT
    threshold: int = 0  # sum
    gap_detail: str = ""  # window: a lower-case JSON key, or "" for none
    gauges: tuple[str, ...] = ()  # track: the open-now and oldest-open gauge fields
    counters: dict[str, int] = field(default_factory=dict)
    anomaly: Anomaly | None = None

    def __post_init__(self) -> None:
        # The stores write it into the record's JSON as it is (apply.lua splices text).
        if self.gap_detail and not _DETAIL_KEY.fullmatch(self.gap_detail):
            raise ValueError(f"Check.gap_detail must match {_DETAIL_KEY.pattern}")

    @property
    def anomaly_counter(self) -> str:
        """The counter field its anomaly moves when it hits; "" without one."""
        a = self.anomaly
        return "" if a is None else fields.anomaly_field(a.detector, a.severity, a.livemode, a.history)


# The slots of a field scheme (SubscriptionState.paying_scheme, movement_schemes); label values
# never contain braces.
KIND, CURRENCY = "{kind}", "{currency}"


# Equal event times: a created snapshot never replaces an updated one of the same second, and a
# deleted one always wins (Stripe often sends created and updated, or updated and deleted, within a second).
SUBSCRIPTION_RANKS = {"customer.subscription.created": 0, "customer.subscription.deleted": 2}
UPDATED_RANK = 1


@dataclass(frozen=True)
class SubscriptionState:
    """A subscription snapshot; the store keeps the newest by event time (then rank) and moves the gauges.

    The store knows no status: a held snapshot adds each of `gauges` (subscriptions by status: 1,
    MRR and MRR by plan: its amounts); the store remembers what it added and takes it back when a
    newer snapshot replaces it. An ended one holds nothing and bumps `ended_counter` once.

    Its MRR (`contribution`) also adds to its customer's MRR in `mrr_currency`, which the store
    keeps per customer; when that goes from `before` to `after` the store moves one movement kind
    (`movement_schemes`, docs/revenue.md) and the paying-customers gauge (`paying_scheme`) on the
    zero crossings. Those are schemes, filled in with the currency that moved (fill()), so the
    store keeps no field names per subscription for them: a snapshot may move the currency of
    the one it replaces.
    """

    id: str
    livemode: str
    at: int  # event created: an older snapshot never overwrites a newer one
    status: str
    mrr_currency: str
    mrr_milli: int  # monthly amount in thousandths of the minor unit: integer, so no drift
    period_end: int
    ttl: int
    ended_counter: str = ""  # the counter field to bump when it ends; "" for none (history)
    customer: str = ""  # whose MRR it adds to; "" (no customer id): the subscription is its own customer
    rank: int = UPDATED_RANK  # SUBSCRIPTION_RANKS: which of two snapshots of the same second wins
    mrr_by_plan: tuple[tuple[str, int], ...] = ()  # (plan name, thousandths) summing to mrr_milli
    customer_ttl: int = 0  # how long the customer's MRR is kept; 0: `ttl`
    moves: bool = True  # live: moves the movement counters; history moves state only

    @property
    def held(self) -> bool:
        """Whether its status holds it in the subscriptions and MRR gauges (an ended one is not)."""
        return self.status not in ENDED_STATUSES

    @property
    def status_field(self) -> str:
        return fields.field(fam.SUBSCRIPTIONS, self.status, self.livemode)

    @property
    def mrr_field(self) -> str:
        """The MRR gauge field it adds `mrr_milli` to; "" without a currency."""
        return fields.field(fam.MRR, self.mrr_currency, self.livemode) if self.mrr_currency else ""

    @property
    def gauges(self) -> list[tuple[str, int]]:
        """The gauge fields it adds to while it is kept, and by how much."""
        if not self.held:
            return []
        held = [(self.status_field, 1)]
        if self.mrr_currency:
            held.append((self.mrr_field, self.mrr_milli))
            held += [(fields.field(fam.MRR_BY_PLAN, plan, self.mrr_currency, self.livemode), milli)
                     for plan, milli in self.mrr_by_plan if milli]
        return held

    @property
    def contribution(self) -> int:
        """What it adds to its customer's MRR in `mrr_currency`."""
        return self.mrr_milli if self.held and self.mrr_currency else 0

    @property
    def customer_key(self) -> str:
        return self.customer or self.id

    @property
    def paying_scheme(self) -> str:
        """The paying-customers gauge field, with CURRENCY for the currency (any currency it moves)."""
        return fields.field(fam.PAYING_CUSTOMERS, CURRENCY, self.livemode)

    @property
    def movement_schemes(self) -> tuple[str, str] | None:
        """The movement amount and customers counter fields, with KIND and CURRENCY to fill in; None
        for history, which moves no movement counter."""
        if not self.moves:
            return None
        return (fields.field(fam.MRR_MOVEMENT_AMOUNT, KIND, CURRENCY, self.livemode),
                fields.field(fam.CUSTOMER_MOVEMENTS, KIND, CURRENCY, self.livemode))

    @property
    def lapse_watched(self) -> bool:
        """An active subscription is watched for a period that ends with no paid invoice."""
        return self.status == "active"


def fill(scheme: str, currency: str, kind: str = "") -> str:
    """A field scheme filled in (apply.lua does the same)."""
    return scheme.replace(KIND, kind).replace(CURRENCY, currency)


def movement(before: int, after: int, paid_before: bool) -> tuple[str, int] | None:
    """The kind and (positive) amount of a customer's MRR change in one currency (docs/revenue.md);
    apply.lua has the same rule."""
    if before == after:
        return None
    if before <= 0:
        return ("reactivation" if paid_before else "new"), after
    if after <= 0:
        return "churn", before
    return ("expansion", after - before) if after > before else ("contraction", before - after)


@dataclass(frozen=True)
class SubscriptionPayment:
    """A paid invoice of a subscription: it is not lapsed for the period that began before `at`."""

    id: str
    livemode: str
    at: int
    ttl: int


@dataclass(frozen=True)
class LogEntry:
    """An event's line in the recent-events log (/api/events, /events), built from the event
    alone; the store adds its result (accepted or duplicate) and the detectors that hit."""

    id: str | None
    type: str | None
    created: int | None
    received: int
    livemode: bool | None
    customer: str | None = None
    object: str | None = None
    amount: int | None = None  # minor units
    currency: str | None = None
    history: bool = False
    reason: str | None = None  # why a rejected event was refused
    account: str | None = None  # the Stripe Connect account (event.account); None: the platform's own

    def as_dict(self) -> dict[str, Any]:
        """Every field, None too: each log line has the same keys."""
        return dict(self.__dict__)


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
    failed_detectors: tuple[str, ...] = ()  # detectors whose checks raised: recorded without them
    log: LogEntry | None = None  # its recent-events log line; None for a plan that is no received event
    # Re-recording a quarantined event (billingwatch requeue): the mark its quarantine left on the
    # dedup key is no duplicate; a recorded one still is (recording/quarantine.py).
    requeue: bool = False


_MAX_MONTHLY_MINOR = 10**12  # held x1000 in a signed 64-bit store integer, summed over subscriptions
# A refund in these states moves money (or will); failed and canceled ones never did.
_REFUND_COUNTED = frozenset({"succeeded", "pending", "requires_action"})
_REFUND_VOID = frozenset({"failed", "canceled"})


def lag_bucket(lag_seconds: float) -> str:
    """The upper bound of the lag histogram bucket a value falls in."""
    index = bisect.bisect_left(fam.LAG_BUCKETS, lag_seconds)
    return "+Inf" if index == len(fam.LAG_BUCKETS) else repr(fam.LAG_BUCKETS[index])


def _add(counters: dict[str, int], key: str, amount: int = 1) -> None:
    counters[key] = counters.get(key, 0) + amount


def plan_event(
    event: Event,
    *,
    received_at: float,
    detectors: "Iterable[Detector]",
    context: "Context",
    dedup_ttl: int,
    subscription_ttl: int,
    history: bool = False,
    max_clock_skew: int = 300,
    plans: Mapping[str, str] | None = None,
) -> Plan:
    """Everything recording this event changes, for the store to apply atomically.

    A replayed event (replay, backfill, reconcile --replay) is history: it updates state (dedup,
    detector memory, subscriptions, the count-once keys) but moves no live counter, only
    billingwatch_history_events_total, and its anomalies are marked history. Otherwise 30 days
    imported at once would reach the rules as one burst "now".

    An event created after it was received (beyond `max_clock_skew`, the signature tolerance) is
    not Stripe's: it would pin the last-created gauge and win every "newest snapshot" comparison.

    `plans` maps price or product ids to plan names (BILLINGWATCH_PLANS) for MRR by plan.
    """
    if event.created > received_at + max_clock_skew:
        raise InvalidEvent("event.created is in the future")
    mode = livemode_label(event.livemode)
    detectors = list(detectors)
    # A type only a (plugin) detector reads is still a known label value: fixed at start-up.
    type_label = event_type_label(event.type, (d.event_types for d in detectors))
    counters: dict[str, int] = {fields.field(fam.EVENTS, type_label, mode): 1}
    maxima = {fields.field(fam.LAST_CREATED, mode): event.created}
    lag = max(0.0, received_at - event.created)
    _add(counters, fields.field(fam.LAG_BUCKET, lag_bucket(lag), mode))
    _add(counters, fields.field(fam.LAG_SUM, mode), round(lag * 1000))
    _add(counters, fields.field(fam.LAG_COUNT, mode))
    maxima[fields.field(fam.LAST_RECEIVED, mode)] = int(received_at)
    checks: list[Check] = []
    subscription: SubscriptionState | None = None
    payment: SubscriptionPayment | None = None
    kind = event.object_kind

    if event.type in CHARGE_EVENTS and kind == "charge":
        charge = charge_of(event.object)
        status = CHARGE_EVENTS[event.type]
        _add(counters, fields.field(fam.CHARGES, status, charge.currency, mode))
        _add(counters, fields.field(fam.CHARGE_OUTCOMES, status, mode))
        _add(counters, fields.field(fam.CHARGE_AMOUNT, status, charge.currency, mode), charge.amount)
        if status == "failed":
            _add(counters, fields.field(fam.CHARGE_FAILURES, known(charge.failure_reason, DECLINE_REASONS), mode))
    elif kind == "refund" and event.type in REFUND_EVENTS:
        checks.extend(refund_checks(refund_of(event.object), mode, dedup_ttl))
    elif event.type == "charge.refunded" and kind == "charge":
        # Older API versions list the refunds on the charge; newer ones send refund.created too.
        for raw in list_data(event.object, "refunds", "charge"):
            if not isinstance(raw, dict):
                raise InvalidEvent("charge.refunds.data[] must be an object")
            checks.extend(refund_checks(refund_of(raw), mode, dedup_ttl))
    elif event.type == "charge.dispute.created" and kind == "dispute":
        dispute = dispute_of(event.object)
        _add(counters, fields.field(fam.DISPUTES, known(dispute.reason, DISPUTE_REASONS), mode))
        _add(counters, fields.field(fam.DISPUTE_AMOUNT, dispute.currency, mode), dispute.amount)
    elif event.type == "radar.early_fraud_warning.created" and kind == "radar.early_fraud_warning":
        warning = early_fraud_warning_of(event.object)
        _add(counters, fields.field(fam.EARLY_FRAUD_WARNINGS, known(warning.fraud_type, FRAUD_TYPES), mode))
    elif kind == "invoice":
        invoice = invoice_of(event.object)
        if event.type in INVOICE_PAID_EVENTS:
            # invoice.paid and invoice.payment_succeeded report the same payment: count it once.
            checks.append(_count_once(f"invpaid:{mode}:{invoice.id}", dedup_ttl, {
                fields.field(fam.INVOICES_PAID, invoice.currency, mode): 1,
                fields.field(fam.INVOICE_PAID_AMOUNT, invoice.currency, mode): invoice.amount_paid,
            }))
            if invoice.subscription:
                payment = SubscriptionPayment(invoice.subscription, mode, event.created, dedup_ttl)
        elif event.type == "invoice.payment_failed":
            attempt = INVOICE_ATTEMPTS[min(max(invoice.attempt_count, 1), 4) - 1]
            _add(counters, fields.field(fam.INVOICE_PAYMENT_FAILURES, attempt, mode))
    elif kind == "subscription" and event.type in SUBSCRIPTION_EVENTS:
        subscription = subscription_state(event, dedup_ttl, subscription_ttl, plans or {})
        checks.extend(trial_checks(event, subscription.status, subscription_ttl))
    if event.type in SIGNAL_EVENTS:
        checks.extend(signal_checks(signal_changes(event, mode), counters, dedup_ttl, subscription_ttl))

    failed: list[str] = []
    for detector in detectors:
        if event.type in detector.event_types:
            try:
                found = checked(detector.checks(event, context), Check, Anomaly)  # a bad output fails here
                checks.extend(found if event.account is None else [for_account(c, event.account) for c in found])
            except InvalidEvent:
                raise  # the event itself is malformed: nothing records it
            except Exception:  # a detector's bug (often a plugin's) must not cost the event: a refusal
                failed.append(detector.name)  # would have Stripe retry it for days, never counted

    plan = Plan(
        event_id=event.id,
        dedup_ttl=dedup_ttl,
        livemode=mode,
        counters=counters,
        maxima=maxima,
        checks=checks,
        subscription=subscription,
        payment=payment,
        failed_detectors=tuple(failed),
        log=log_entry(event, received_at, history),
    )
    return as_history(plan, event, type_label) if history else plan


def for_account(check: Check, account: str) -> Check:
    """A detector's check on a Stripe Connect account's event: its key scoped by the account, so
    connected accounts never share detector memory (card fingerprints of platform-created cards
    are shared across them), and its record naming the account. The platform's own events keep
    their keys exactly as they are. Quoted: an account id holding ':' cannot reach another's keys."""
    anomaly = check.anomaly
    if anomaly is not None and anomaly.account is None:
        anomaly = _evolve(anomaly, account=account)
    return _evolve(check, key=f"acct:{quote(account, safe='')}:{check.key}", anomaly=anomaly)


def log_entry(event: Event, received_at: float, history: bool) -> LogEntry:
    """The event's log line: who, which object, how much, read the same way for every type."""
    obj = event.object
    return LogEntry(
        id=event.id, type=event.type, created=event.created, received=int(received_at), livemode=event.livemode,
        customer=customer_id(obj), object=object_id(obj), amount=amount_of(obj), currency=currency_of(obj),
        history=history, account=event.account,
    )


def rejected_entry(document: Any, reason: str, received_at: float, history: bool) -> LogEntry:
    """The log line of a signed event the exporter refused: whatever of it can be read safely."""
    doc: Mapping[str, Any] = document if isinstance(document, Mapping) else {}
    data = doc.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    obj = obj if isinstance(obj, Mapping) else {}
    created = doc.get("created")
    livemode = doc.get("livemode")
    return LogEntry(
        id=short_text(doc.get("id")), type=short_text(doc.get("type"), 80),
        created=created if isinstance(created, int) and not isinstance(created, bool) and 0 < created <= 10**15
        else None,
        received=int(received_at), livemode=livemode if isinstance(livemode, bool) else None,
        customer=customer_id(obj), object=object_id(obj), amount=amount_of(obj), currency=currency_of(obj),
        history=history, reason=reason[:300], account=short_text(doc.get("account")),
    )


def as_history(plan: Plan, event: Event, type_label: str) -> Plan:
    """The plan of a replayed event: the same state changes, no live counter, no delivery timing.

    The count-once checks keep their keys (a later live delivery of the same refund, invoice
    payment or trial is not counted either) but lose their counters; anomalies are marked history.
    A subscription still moves the gauges and its customer's MRR, but no movement counter.
    """
    mode = livemode_label(event.livemode)
    checks = [
        check if not check.counters and check.anomaly is None else _evolve(
            check,
            counters={},
            anomaly=None if check.anomaly is None else _evolve(check.anomaly, history=True),
        )
        for check in plan.checks
    ]
    subscription = plan.subscription and replace(plan.subscription, ended_counter="", moves=False)
    return _evolve(
        plan,
        counters={fields.field(fam.HISTORY_EVENTS, type_label, mode): 1},
        maxima={fields.field(fam.LAST_CREATED, mode): event.created},
        checks=checks,
        subscription=subscription,
    )


_Frozen = TypeVar("_Frozen", Plan, Check, Anomaly)


def _evolve(obj: _Frozen, **changes: Any) -> _Frozen:
    """dataclasses.replace for these plain frozen dataclasses (no __post_init__, no init=False
    field) at a fraction of its cost: a replay plans tens of thousands of events a second."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__, **changes)
    return new


def missed_event_plan(event_id: str, livemode: bool, dedup_ttl: int) -> Plan:
    """Counts one event Stripe sent that never arrived; its own dedup id makes the count happen once."""
    mode = livemode_label(livemode)
    return Plan(
        event_id=f"missed:{event_id}",
        dedup_ttl=dedup_ttl,
        livemode=mode,
        counters={fields.field(fam.MISSED_EVENTS, mode): 1},
    )


def _count_once(key: str, ttl: int, counters: dict[str, int]) -> Check:
    return Check(op="once", key=key, ttl=ttl, counters=counters)


def signal_checks(changes: SignalChanges, counters: dict[str, int], ttl: int, state_ttl: int) -> list[Check]:
    """A money signal's counters added to the event's, and its checks: each count-once key kept
    `ttl` (the dedup retention), the reviews' open set `state_ttl` after its last change."""
    for name, value in changes.counters.items():
        _add(counters, name, value)
    checks = [_count_once(key, ttl, counted) for key, counted in changes.once]
    review = changes.review
    if review is not None:
        checks.append(Check(op="track", key=review.key, ttl=state_ttl, member=review.member, at=review.at,
                            amount=1 if review.opened else 0, cap=REVIEW_CAP, gauges=review.gauges))
    return checks


def refund_checks(refund: Refund, mode: str, ttl: int) -> list[Check]:
    """Count a refund once; take it back once if it fails or is canceled.

    Two "once" keys: `refund:` (counted) and `refundvoid:` (taken back). A live refund adds when
    `refund:` is new. A failed or canceled one claims both keys: counted before, only the
    take-back hits; never counted, both hit (refunds and reversed refunds each +1, net 0) and the
    claimed `refund:` key stops a late `refund.created` from counting it. Redeliveries hit
    neither. The take-back moves its own counters instead of subtracting: a counter that goes
    down reads as a restart to Prometheus' rate() and increase().
    """
    if refund.status not in _REFUND_COUNTED and refund.status not in _REFUND_VOID:
        return []
    count = {
        fields.field(fam.REFUNDS, refund.currency, mode): 1,
        fields.field(fam.REFUND_AMOUNT, refund.currency, mode): refund.amount,
    }
    checks = [_count_once(f"refund:{mode}:{refund.id}", ttl, count)]
    if refund.status in _REFUND_VOID:
        checks.append(_count_once(f"refundvoid:{mode}:{refund.id}", ttl, {
            fields.field(fam.REFUNDS_REVERSED, refund.currency, mode): 1,
            fields.field(fam.REFUND_REVERSED_AMOUNT, refund.currency, mode): refund.amount,
        }))
    return checks


def trial_checks(event: Event, status: str, ttl: int) -> list[Check]:
    """A trial's start and its end (converted or expired), each counted once per subscription.

    The end shares one key, so a trial ends once. Both count only up to TRIAL_END_WINDOW after the
    trial's end: a subscription whose trial ended long ago, seen for the first time (a new
    deployment) or canceled now, is no trial starting or expiring now.
    """
    sub = subscription_of(event.object)
    mode = livemode_label(event.livemode)
    trial_over = sub.trial_end if sub.trial_end is not None else sub.trial_start
    if trial_over is None or event.created > trial_over + TRIAL_END_WINDOW:
        return []
    checks: list[Check] = []
    if sub.trial_start is not None:
        checks.append(_count_once(f"trialstart:{mode}:{sub.id}", ttl, {fields.field(fam.TRIALS_STARTED, mode): 1}))
    outcome = "converted" if status == "active" else "expired" if status in _TRIAL_EXPIRED else ""
    if sub.trial_end is not None and outcome:
        checks.append(_count_once(f"trialend:{mode}:{sub.id}", ttl, {fields.field(fam.TRIALS_ENDED, outcome, mode): 1}))
    return checks


TRIAL_END_WINDOW = 30 * 86400
_TRIAL_EXPIRED = frozenset({"canceled", "incomplete_expired", "paused"})


def plan_of(item: SubscriptionItem, plans: Mapping[str, str]) -> str:
    """The plan name of an item: its price id's, else its product id's, else other."""
    return plans.get(item.price) or plans.get(item.product) or OTHER_PLAN


def subscription_state(event: Event, ended_ttl: int, live_ttl: int,
                       plans: Mapping[str, str] | None = None) -> SubscriptionState:
    """The snapshot to keep. An ended one is kept only as long as an older snapshot may arrive."""
    sub = subscription_of(event.object)
    status = "canceled" if event.type == "customer.subscription.deleted" else sub.status
    by_currency: dict[str, dict[str, float]] = {}
    for item in sub.items:
        amount = monthly_amount(item.unit_amount, item.quantity, item.interval, item.interval_count)
        by_plan = by_currency.setdefault(item.currency, {})
        name = plan_of(item, plans or {})
        by_plan[name] = by_plan.get(name, 0.0) + amount
    # A subscription bills in one currency; take the largest should a malformed one mix them.
    currency, by_plan = max(by_currency.items(), key=lambda kv: sum(kv[1].values()), default=("", {}))
    if status not in MRR_STATUSES:
        by_plan = {}
    if not 0 <= sum(by_plan.values()) <= _MAX_MONTHLY_MINOR:
        # Checked here because the store script must never fail half-way (Redis keeps partial writes).
        raise InvalidEvent("subscription items: monthly amount out of range")
    # Each plan's share rounded on its own, and MRR their sum: the plans add up to MRR exactly.
    mrr_by_plan = tuple(sorted((name, round(amount * 1000)) for name, amount in by_plan.items()))
    return SubscriptionState(
        id=sub.id,
        livemode=livemode_label(event.livemode),
        at=event.created,
        status=status if status in (*LIVE_STATUSES, *ENDED_STATUSES) else "other",
        mrr_currency=currency,
        mrr_milli=sum(milli for _, milli in mrr_by_plan),
        period_end=sub.current_period_end or 0,
        ttl=ended_ttl if status in ENDED_STATUSES else live_ttl,
        ended_counter=fields.field(fam.SUBSCRIPTIONS_ENDED, livemode_label(event.livemode)),
        customer=sub.customer or "",
        rank=SUBSCRIPTION_RANKS.get(event.type, UPDATED_RANK),
        mrr_by_plan=mrr_by_plan,
        customer_ttl=live_ttl,
    )
