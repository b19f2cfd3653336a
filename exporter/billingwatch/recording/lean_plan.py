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

from collections.abc import Iterable, Mapping
from typing import Any

from billingwatch.detectors import Context, Detector
from billingwatch.detectors.currency_mismatch import CurrencyMismatch
from billingwatch.detectors.duplicate_charge import DuplicateCharge
from billingwatch.metrics import families as fam
from billingwatch.metrics import fields
from billingwatch.metrics.labels import DECLINE_REASONS, event_type_label, known
from billingwatch.money import is_currency
from billingwatch.recording.events import MAX_AMOUNT, Event, _encodable
from billingwatch.recording.plan import Anomaly, Check, Plan, as_history, lag_bucket, log_entry

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
            return self._charge(event, obj, CHARGE_TYPES[event_type], readers, received_at, history)
        if obj.get("object") != "payment_intent":
            return None
        return self._intent(event, obj, readers, received_at, history)

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

    def _head(self, event: Event, received_at: float) -> tuple[str, str, dict[str, int], dict[str, int]]:
        """The livemode label, the type label, and the counters and maxima every event moves, in
        plan_event()'s order."""
        mode = "true" if event.livemode else "false"
        type_label = event_type_label(event.type, self._detector_types)
        lag = max(0.0, received_at - event.created)
        counters = {
            fields.field(fam.EVENTS, type_label, mode): 1,
            fields.field(fam.LAG_BUCKET, lag_bucket(lag), mode): 1,
            fields.field(fam.LAG_SUM, mode): round(lag * 1000),
            fields.field(fam.LAG_COUNT, mode): 1,
        }
        maxima = {fields.field(fam.LAST_CREATED, mode): event.created,
                  fields.field(fam.LAST_RECEIVED, mode): int(received_at)}
        return mode, type_label, counters, maxima

    def _charge(self, event: Event, obj: Any, status: str, readers: list[Detector],
                received_at: float, history: bool) -> Plan | None:
        charge_id, amount, currency = obj.get("id"), obj.get("amount"), obj.get("currency")
        customer = obj.get("customer")
        if not (_plain_id(obj.get("status")) and _plain_id(charge_id) and _plain_int(amount, 0, MAX_AMOUNT)
                and is_currency(currency) and _plain_optional_id(customer)
                and _plain_optional_id(obj.get("payment_intent"))):
            return None
        mode, type_label, counters, maxima = self._head(event, received_at)
        counters[fields.field(fam.CHARGES, status, currency, mode)] = 1
        counters[fields.field(fam.CHARGE_OUTCOMES, status, mode)] = 1
        counters[fields.field(fam.CHARGE_AMOUNT, status, currency, mode)] = amount
        if status == "failed":
            outcome = obj.get("outcome")
            reason = (outcome.get("reason") if isinstance(outcome, Mapping) else None) or obj.get("failure_code")
            reason = reason if isinstance(reason, str) and reason else None
            counters[fields.field(fam.CHARGE_FAILURES, known(reason, DECLINE_REASONS), mode)] = 1
        checks: list[Check] = []
        for detector in readers:
            if isinstance(detector, DuplicateCharge):
                payer = customer or _card_payer(obj)
                if payer and amount > 0:
                    checks.append(self._duplicate(detector, event, mode, payer, charge_id, amount, currency))
            elif isinstance(detector, CurrencyMismatch) and customer:
                checks.append(Check(
                    op="distinct", key=f"cur:{mode}:{customer}", member=currency, at=event.created,
                    ttl=detector.memory_days * 86400, cap=16,
                    anomaly=Anomaly(
                        detector=detector.name, severity=detector.severity, livemode=event.livemode,
                        event_id=event.id, event_type=event.type, event_created=event.created,
                        summary=f"customer {customer} paid in {currency}, unlike their earlier payments",
                        customer=customer, charge=charge_id, amount=amount, currency=currency,
                    )))
        return self._finish(event, mode, type_label, counters, maxima, checks, received_at, history)

    def _intent(self, event: Event, obj: Any, readers: list[Detector], received_at: float,
                history: bool) -> Plan | None:
        intent_id, amount, currency = obj.get("id"), obj.get("amount_received", 0), obj.get("currency")
        customer, latest = obj.get("customer"), obj.get("latest_charge")
        # Without latest_charge the reference reads the older API's charge list: left to it.
        if not (_plain_id(intent_id) and _plain_id(obj.get("status")) and _plain_int(amount, 0, MAX_AMOUNT)
                and is_currency(currency) and _plain_optional_id(customer) and _plain_id(latest)):
            return None
        mode, type_label, counters, maxima = self._head(event, received_at)
        checks: list[Check] = []
        for detector in readers:
            if isinstance(detector, DuplicateCharge) and customer and amount > 0:
                checks.append(self._duplicate(detector, event, mode, customer, latest, amount, currency))
        return self._finish(event, mode, type_label, counters, maxima, checks, received_at, history)

    def _duplicate(self, detector: DuplicateCharge, event: Event, mode: str, payer: str, charge_id: str,
                   amount: int, currency: str) -> Check:
        return Check(
            op="window", key=f"dup:{mode}:{payer}:{currency}:{amount}", member=charge_id, at=event.created,
            window=detector.window_seconds, ttl=self._state_ttl,
            anomaly=Anomaly(
                detector=detector.name, severity=detector.severity, livemode=event.livemode, event_id=event.id,
                event_type=event.type, event_created=event.created,
                summary=f"charge {charge_id} repeats an earlier charge of the same amount",
                customer=payer, charge=charge_id, amount=amount, currency=currency,
            ))

    def _finish(self, event: Event, mode: str, type_label: str, counters: dict[str, int], maxima: dict[str, int],
                checks: list[Check], received_at: float, history: bool) -> Plan:
        plan = Plan(event_id=event.id, dedup_ttl=self._dedup_ttl, livemode=mode, counters=counters, maxima=maxima,
                    checks=checks, log=log_entry(event, received_at, history))
        return as_history(plan, event, type_label) if history else plan


def _card_payer(charge: Mapping[str, Any]) -> str | None:
    """A guest payment's payer, "card:<fingerprint>", read as charge_of() reads the fingerprint."""
    details = charge.get("payment_method_details")
    card = details.get("card") if isinstance(details, Mapping) else None
    fingerprint = card.get("fingerprint") if isinstance(card, Mapping) else None
    if isinstance(fingerprint, str) and 0 < len(fingerprint) <= _MAX_ID and _encodable(fingerprint):
        return "card:" + fingerprint
    return None
