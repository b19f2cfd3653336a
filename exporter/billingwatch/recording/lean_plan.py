"""A lean planner for the commonest event types: a decoded document straight to its Plan.

Charges and payment intents are about half of a Stripe account's events (bench/traffic.py). For
them plan_event() parses the envelope into an Event, the object into a Charge two or three times
(the plan and each detector), and checks each detector's output; here each field is read once
and the built-in detectors' checks are written out. plan_event() stays the reference and the
path for everything else: lean_plan() returns None whenever it is not sure, and then the caller
plans with plan_event(), which raises InvalidEvent for what it refuses. So lean_plan() never
refuses an event itself, and its fast path only takes documents the reference takes: every
field it reads must have the plain shape Stripe sends (ASCII ids, no expanded objects, no
Connect account, no older API's charge list), else None. tests/test_lean_plan.py checks on
generated variations of Stripe's real shapes that a lean plan equals the reference's, with the
same field order (the store's encoding is byte-identical).

A (plugin) detector that reads one of these types, or a built-in one of another class, sends
that type to plan_event(): only DuplicateCharge and CurrencyMismatch are written out here.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from billingwatch.detectors import Context, Detector
from billingwatch.detectors.currency_mismatch import CurrencyMismatch
from billingwatch.detectors.duplicate_charge import DuplicateCharge
from billingwatch.metrics import families as fam
from billingwatch.metrics import fields
from billingwatch.metrics.labels import DECLINE_REASONS, event_type_label, known
from billingwatch.money import is_currency
from billingwatch.recording.events import (
    MAX_AMOUNT,
    Event,
    _encodable,
    amount_of,
    currency_of,
    customer_id,
    object_id,
)
from billingwatch.recording.plan import Anomaly, Check, CheckOp, Plan, as_history, lag_bucket, log_entry
from billingwatch.store.batch_args import EventArgs, json_text

CHARGE_TYPES = {"charge.succeeded": "succeeded", "charge.failed": "failed"}
INTENT_TYPES = frozenset({"payment_intent.succeeded"})
LEAN_TYPES = frozenset({*CHARGE_TYPES, *INTENT_TYPES})
_MAX_ID = 255
_MAX_INT = 10**15


def _plain_id(value: Any) -> bool:
    """An id the reference takes as it is: a non-empty ASCII string of at most 255 characters."""
    return value.__class__ is str and 0 < len(value) <= _MAX_ID and value.isascii()


def _plain_optional_id(value: Any) -> bool:
    """None or a plain id ("" is None to the reference, and is left to it)."""
    return value is None or _plain_id(value)


def _plain_int(value: Any, low: int, high: int) -> bool:
    return value.__class__ is int and low <= value <= high


class LeanPlanner:
    """Plans of charge.succeeded, charge.failed and payment_intent.succeeded for one Recorder's
    settings; plan() returns None for anything else (the caller uses plan_event())."""

    def __init__(self, detectors: Iterable[Detector], context: Context, dedup_ttl: int,
                 max_clock_skew: int) -> None:
        detectors = list(detectors)
        self._dedup_ttl = dedup_ttl
        self._state_ttl = context.state_ttl
        self._max_clock_skew = max_clock_skew
        self._detector_types = [d.event_types for d in detectors]
        # For each type: the detectors that read it, in order, when all of them are written out here.
        self._readers: dict[str, list[Detector]] = {}
        for event_type in LEAN_TYPES:
            readers = [d for d in detectors if event_type in d.event_types]
            if all(type(d) in (DuplicateCharge, CurrencyMismatch) for d in readers):
                self._readers[event_type] = readers

    def plan(self, doc: Any, received_at: float, history: bool) -> Plan | None:
        """plan_event()'s Plan of the document, or None: plan it with plan_event()."""
        facts = self._facts(doc, received_at)
        return None if facts is None else facts.plan(self._dedup_ttl, received_at, history)

    def event_args(self, doc: Any, received_at: float, history: bool, prefix: str,
                   live_allowed: bool = True) -> EventArgs | None:
        """event_args(plan_event(...), prefix) of the document, written without the Plan; or None
        (also for a livemode event where only test mode is allowed: the caller refuses it)."""
        facts = self._facts(doc, received_at)
        if facts is None or (facts.event.livemode and not live_allowed):
            return None
        dedup_ttl = self._dedup_ttl
        return facts.event_args(dedup_ttl, received_at, history, prefix,
                                lambda: facts.plan(dedup_ttl, received_at, history))

    def _facts(self, doc: Any, received_at: float) -> "_Facts | None":
        if doc.__class__ is not dict:
            return None
        event_type: Any = doc.get("type")
        readers = self._readers.get(event_type) if event_type.__class__ is str else None
        if readers is None or doc.get("object") != "event":
            return None
        event = self._envelope(doc, event_type, received_at)
        if event is None:
            return None
        obj: Any = event.object
        if event_type in CHARGE_TYPES:
            if obj.get("object") != "charge":
                return None
            return self._charge(event, obj, CHARGE_TYPES[event_type], readers, received_at)
        if obj.get("object") != "payment_intent":
            return None
        return self._intent(event, obj, readers, received_at)

    def _envelope(self, doc: Any, event_type: str, received_at: float) -> Event | None:
        event_id, created, livemode = doc.get("id"), doc.get("created"), doc.get("livemode")
        if not _plain_id(event_id) or not _plain_int(created, 1, _MAX_INT) or livemode.__class__ is not bool:
            return None
        if created > received_at + self._max_clock_skew:  # refused by the reference
            return None
        data = doc.get("data")
        if data.__class__ is not dict:
            return None
        obj, previous = data.get("object"), data.get("previous_attributes")
        if obj.__class__ is not dict or not (previous is None or previous.__class__ is dict):
            return None
        if doc.get("account") is not None:  # a Connect account's event: its checks are scoped (for_account)
            return None
        request = doc.get("request")
        request_id = request.get("id") if request.__class__ is dict else request
        if not _plain_optional_id(request_id):
            return None
        return Event(event_id, event_type, created, livemode, obj, previous or {}, None, request_id)

    def _head(self, event: Event, received_at: float) -> "_Facts":
        """The counters and maxima every event moves, in plan_event()'s order."""
        mode = "true" if event.livemode else "false"
        lag = max(0.0, received_at - event.created)
        counters = {
            "": 1,  # the events counter, whose field history changes: set in _Facts
            fields.field(fam.LAG_BUCKET, lag_bucket(lag), mode): 1,
            fields.field(fam.LAG_SUM, mode): round(lag * 1000),
            fields.field(fam.LAG_COUNT, mode): 1,
        }
        return _Facts(event, mode, event_type_label(event.type, self._detector_types), counters, [])

    def _charge(self, event: Event, obj: Any, status: str, readers: list[Detector],
                received_at: float) -> "_Facts | None":
        charge_id, amount, currency = obj.get("id"), obj.get("amount"), obj.get("currency")
        customer = obj.get("customer")
        if not (_plain_id(obj.get("status")) and _plain_id(charge_id) and _plain_int(amount, 0, MAX_AMOUNT)
                and is_currency(currency) and _plain_optional_id(customer)
                and _plain_optional_id(obj.get("payment_intent"))):
            return None
        facts = self._head(event, received_at)
        mode, counters = facts.mode, facts.counters
        counters[fields.field(fam.CHARGES, status, currency, mode)] = 1
        counters[fields.field(fam.CHARGE_OUTCOMES, status, mode)] = 1
        counters[fields.field(fam.CHARGE_AMOUNT, status, currency, mode)] = amount
        if status == "failed":
            outcome = obj.get("outcome")
            reason = (outcome.get("reason") if isinstance(outcome, Mapping) else None) or obj.get("failure_code")
            reason = reason if isinstance(reason, str) and reason else None
            counters[fields.field(fam.CHARGE_FAILURES, known(reason, DECLINE_REASONS), mode)] = 1
        for detector in readers:
            if isinstance(detector, DuplicateCharge):
                payer = customer or _card_payer(obj)
                if payer and amount > 0:
                    facts.hits.append(self._duplicate(detector, event, mode, payer, charge_id, amount, currency))
            elif isinstance(detector, CurrencyMismatch) and customer:
                facts.hits.append(_Hit(
                    "distinct", f"cur:{mode}:{customer}", currency, 0, 16, detector.memory_days * 86400,
                    detector.name, detector.severity,
                    f"customer {customer} paid in {currency}, unlike their earlier payments",
                    customer, charge_id, amount, currency))
        return facts

    def _intent(self, event: Event, obj: Any, readers: list[Detector], received_at: float) -> "_Facts | None":
        intent_id, amount, currency = obj.get("id"), obj.get("amount_received", 0), obj.get("currency")
        customer, latest = obj.get("customer"), obj.get("latest_charge")
        # Without latest_charge the reference reads the older API's charge list: left to it.
        if not (_plain_id(intent_id) and _plain_id(obj.get("status")) and _plain_int(amount, 0, MAX_AMOUNT)
                and is_currency(currency) and _plain_optional_id(customer) and _plain_id(latest)):
            return None
        facts = self._head(event, received_at)
        for detector in readers:
            if isinstance(detector, DuplicateCharge) and customer and amount > 0:
                facts.hits.append(self._duplicate(detector, event, facts.mode, customer, latest, amount, currency))
        return facts

    def _duplicate(self, detector: DuplicateCharge, event: Event, mode: str, payer: str, charge_id: str,
                   amount: int, currency: str) -> "_Hit":
        return _Hit("window", f"dup:{mode}:{payer}:{currency}:{amount}", charge_id, detector.window_seconds, 64,
                    self._state_ttl, detector.name, detector.severity,
                    f"charge {charge_id} repeats an earlier charge of the same amount",
                    payer, charge_id, amount, currency)


class _Hit(NamedTuple):
    """A built-in detector's check, and the anomaly record it emits when it hits."""

    op: CheckOp
    key: str
    member: str
    window: int
    cap: int
    ttl: int
    detector: str
    severity: str
    summary: str
    customer: str
    charge: str
    amount: int
    currency: str


class _Facts(NamedTuple):
    """What an event of a lean type records: written out as a Plan, or as the store's arguments."""

    event: Event
    mode: str
    type_label: str
    counters: dict[str, int]  # live, with the events counter's field at ""
    hits: list[_Hit]

    def plan(self, dedup_ttl: int, received_at: float, history: bool) -> Plan:
        event = self.event
        counters = {fields.field(fam.EVENTS, self.type_label, self.mode) if k == "" else k: v
                    for k, v in self.counters.items()}
        maxima = {fields.field(fam.LAST_CREATED, self.mode): event.created,
                  fields.field(fam.LAST_RECEIVED, self.mode): int(received_at)}
        checks = [Check(op=h.op, key=h.key, member=h.member, at=event.created, window=h.window, cap=h.cap, ttl=h.ttl,
                        anomaly=Anomaly(detector=h.detector, severity=h.severity, livemode=event.livemode,
                                        event_id=event.id, event_type=event.type, event_created=event.created,
                                        summary=h.summary, customer=h.customer, charge=h.charge, amount=h.amount,
                                        currency=h.currency))
                  for h in self.hits]
        plan = Plan(event_id=event.id, dedup_ttl=dedup_ttl, livemode=self.mode, counters=counters, maxima=maxima,
                    checks=checks, log=log_entry(event, received_at, history))
        return as_history(plan, event, self.type_label) if history else plan

    def event_args(self, dedup_ttl: int, received_at: float, history: bool, prefix: str,
                   plan: Callable[[], Plan]) -> EventArgs:
        """What batch_args.event_args() writes for plan(), field for field (store/batch_args.py)."""
        event, mode = self.event, self.mode
        created = event.created
        tag = "{" + prefix + "}"
        obj = event.object
        log = {"id": event.id, "type": event.type, "created": created, "received": int(received_at),
               "livemode": event.livemode, "customer": customer_id(obj), "object": object_id(obj),
               "amount": amount_of(obj), "currency": currency_of(obj), "history": history, "reason": None,
               "account": None}
        if history:
            counters = [fields.field(fam.HISTORY_EVENTS, self.type_label, mode), "1"]
            maxima = [fields.field(fam.LAST_CREATED, mode), str(created)]
        else:
            counters = []
            for name, value in self.counters.items():
                counters += (name or fields.field(fam.EVENTS, self.type_label, mode), str(value))
            maxima = [fields.field(fam.LAST_CREATED, mode), str(created),
                      fields.field(fam.LAST_RECEIVED, mode), str(int(received_at))]
        keys = [f"{tag}:e:{mode}:{event.id}"]
        args = ["", str(dedup_ttl), json_text(log)[:-1], str(len(counters) // 2), *counters,
                str(len(maxima) // 2), *maxima, str(len(self.hits))]
        for h in self.hits:
            keys.append(f"{tag}:c:{h.key}")
            record = {"detector": h.detector, "severity": h.severity, "livemode": event.livemode,
                      "event_id": event.id, "event_type": event.type, "event_created": str(created),
                      "summary": h.summary, "customer": h.customer, "charge": h.charge, "amount": str(h.amount),
                      "currency": h.currency, "history": history}
            # amount, threshold, gap_detail, no gauge fields (track only), no counters
            args += (h.op, str(h.ttl), h.member, str(created), str(h.window), str(h.cap), "0", "0", "", "0", "0",
                     json_text(record), fields.anomaly_field(h.detector, h.severity, event.livemode, history))
        return EventArgs(tuple(keys), tuple(args), plan)


def _card_payer(charge: Mapping[str, Any]) -> str | None:
    """A guest payment's payer, "card:<fingerprint>", read as charge_of() reads the fingerprint."""
    details = charge.get("payment_method_details")
    card = details.get("card") if isinstance(details, Mapping) else None
    fingerprint = card.get("fingerprint") if isinstance(card, Mapping) else None
    if isinstance(fingerprint, str) and 0 < len(fingerprint) <= _MAX_ID and _encodable(fingerprint):
        return "card:" + fingerprint
    return None
