"""Stripe event → typed facts. Pure functions: no I/O, no clock.

Handles both API-version shapes of the objects BillingWatch reads (see README, "Stripe API
versions"). Anything malformed raises InvalidEvent with a one-line reason, before any state
is touched.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from billingwatch.money import is_currency

_EVENT_TYPE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+){1,4}$")
_MAX_ID = 255
_MAX_INT = 10**15  # times and counts beyond this are not Stripe's, and would overflow Redis integers
# Stripe's amount field "supports up to eight digits" (99999999) for most currencies, more for a
# few (https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts). 10^12 minor units
# keeps every real amount and leaves the store's 64-bit counters millions of maximal events from
# overflow (the store still checks every total before writing).
MAX_AMOUNT = 10**12
# Stripe embeds at most 10 refunds in a charge (the rest behind has_more) and allows 20 items per
# subscription; a longer list is not Stripe's.
MAX_LIST = 100


class InvalidEvent(ValueError):
    """The body is JSON but not a Stripe event we can record."""


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    created: int
    livemode: bool
    object: Mapping[str, Any]
    previous_attributes: Mapping[str, Any]
    account: str | None = None
    request_id: str | None = None  # the API request that caused it; None for automatic changes


    @property
    def object_kind(self) -> str:
        kind = self.object.get("object")
        return kind if isinstance(kind, str) else ""


@dataclass(frozen=True)
class Charge:
    id: str
    status: str  # succeeded | failed | pending
    amount: int
    currency: str
    customer: str | None
    card_fingerprint: str | None
    payment_intent: str | None
    failure_reason: str | None  # decline_code, else failure_code


@dataclass(frozen=True)
class PaymentIntent:
    id: str
    status: str
    amount_received: int
    currency: str
    customer: str | None
    latest_charge: str | None


@dataclass(frozen=True)
class Refund:
    id: str
    amount: int
    currency: str
    status: str
    charge: str | None
    customer: str | None = None  # current API versions; older ones leave it to the charge


@dataclass(frozen=True)
class CreditNote:
    id: str
    customer: str | None
    currency: str
    total: int
    type: str  # pre_payment (reduces what is due) | post_payment (after payment)
    status: str
    refunded: int  # the part paid back through refunds (their refund.created events report it)
    out_of_band: int


@dataclass(frozen=True)
class Dispute:
    id: str
    amount: int
    currency: str
    reason: str
    charge: str | None


@dataclass(frozen=True)
class EarlyFraudWarning:
    id: str
    fraud_type: str
    charge: str | None


@dataclass(frozen=True)
class Invoice:
    id: str
    created: int
    customer: str | None
    currency: str
    total: int
    amount_paid: int
    status: str
    billing_reason: str
    attempt_count: int
    subscription: str | None  # new shape: parent.subscription_details.subscription; old: subscription
    charge: str | None  # old shapes only


@dataclass(frozen=True)
class SubscriptionItem:
    unit_amount: int
    quantity: int
    currency: str
    interval: str
    interval_count: int
    id: str = ""  # the subscription item (si_...)
    price: str = ""
    product: str = ""


@dataclass(frozen=True)
class Subscription:
    id: str
    customer: str | None
    status: str
    items: tuple[SubscriptionItem, ...]
    current_period_end: int | None  # old shape on the subscription; new shape on each item
    trial_start: int | None = None
    trial_end: int | None = None


# ---------------------------------------------------------------- field readers


def _field(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise InvalidEvent(f"{where}.{key} is missing")
    return obj[key]


def _encodable(value: str) -> bool:
    """JSON may carry lone surrogates ("\\ud800"): valid JSON, but no UTF-8 can hold them."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def is_id(value: Any) -> bool:
    """What the parser takes as an id: a non-empty, encodable string of at most _MAX_ID characters
    (recording/quarantine.py's envelope uses the same rule, so an event the parser would record is
    never refused as "not an envelope")."""
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID and _encodable(value)


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _field(obj, key, where)
    if not is_id(value):
        raise InvalidEvent(f"{where}.{key} must be a non-empty string")
    return str(value)


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    """An optional string, or an expanded object whose id we take (Stripe expands ids on request)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = value.get("id")
    if not isinstance(value, str) or len(value) > _MAX_ID or not _encodable(value):
        raise InvalidEvent(f"{where}.{key} must be a string or null")
    return value or None


def _int(obj: Mapping[str, Any], key: str, where: str, *, default: int | None = None) -> int:
    value = obj.get(key, default) if default is not None else _field(obj, key, where)
    # bool is an int in Python; a JSON true is not an amount.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(f"{where}.{key} must be an integer")
    if abs(value) > _MAX_INT:
        raise InvalidEvent(f"{where}.{key} is out of range")
    return value


def _amount(obj: Mapping[str, Any], key: str, where: str, *, default: int | None = None,
            signed: bool = False) -> int:
    """An amount in minor units. Only an invoice total may be negative (credits past the price):
    a negative charge or refund would make a _total counter go down."""
    value = _int(obj, key, where, default=default)
    if value < 0 and not signed:
        raise InvalidEvent(f"{where}.{key} must not be negative")
    if abs(value) > MAX_AMOUNT:
        raise InvalidEvent(f"{where}.{key} is larger than any Stripe amount ({MAX_AMOUNT})")
    return value


def list_data(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    """The data of an embedded Stripe list (absent: empty), at most MAX_LIST entries."""
    container = obj.get(key)
    data = container.get("data", []) if isinstance(container, Mapping) else []
    if not isinstance(data, list):
        raise InvalidEvent(f"{where}.{key}.data must be a list")
    if len(data) > MAX_LIST:
        raise InvalidEvent(f"{where}.{key}.data lists more than {MAX_LIST} entries")
    return data


def _opt_time(value: Any, where: str) -> int | None:
    """An optional unix time; one no store can hold (Redis scores are doubles) is invalid."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if abs(value) > _MAX_INT:
        raise InvalidEvent(f"{where}.current_period_end is out of range")
    return value


def _currency(obj: Mapping[str, Any], where: str) -> str:
    value = _field(obj, "currency", where)
    if not is_currency(value):
        raise InvalidEvent(f"{where}.currency must be a currency code Stripe supports (lower case)")
    return str(value)


def _map(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


# ---------------------------------------------------------------- the envelope


def parse_event(body: Any) -> Event:
    """Validate the event envelope Stripe sends and return it typed."""
    if not isinstance(body, Mapping):
        raise InvalidEvent("body must be a JSON object")
    if body.get("object") != "event":
        raise InvalidEvent('not a Stripe event (object must be "event")')
    event_id = _str(body, "id", "event")
    event_type = _str(body, "type", "event")
    if not _EVENT_TYPE.match(event_type) or len(event_type) > 80:
        raise InvalidEvent("event.type is not a Stripe event type")
    created = _int(body, "created", "event")
    if created <= 0:
        raise InvalidEvent("event.created must be a positive unix time")
    livemode = _field(body, "livemode", "event")
    if not isinstance(livemode, bool):
        raise InvalidEvent("event.livemode must be a boolean")
    data = _field(body, "data", "event")
    if not isinstance(data, Mapping):
        raise InvalidEvent("event.data must be an object")
    obj = _field(data, "object", "event.data")
    if not isinstance(obj, Mapping):
        raise InvalidEvent("event.data.object must be an object")
    previous = data.get("previous_attributes") or {}
    if not isinstance(previous, Mapping):
        raise InvalidEvent("event.data.previous_attributes must be an object")
    account = _opt_str(body, "account", "event")
    request = body.get("request")
    # {"id", "idempotency_key"}; API versions before 2017-05-25 send the id as a plain string.
    request_id = _opt_str(request, "id", "event.request") if isinstance(request, Mapping) else (
        _opt_str(body, "request", "event"))
    return Event(event_id, event_type, created, livemode, obj, previous, account, request_id)


# ---------------------------------------------------------------- objects


def charge_of(obj: Mapping[str, Any]) -> Charge:
    where = "charge"
    status = _str(obj, "status", where)
    outcome = _map(obj, "outcome")
    card = _map(_map(obj, "payment_method_details"), "card")
    fingerprint = card.get("fingerprint")
    # outcome.reason carries the decline code (insufficient_funds, ...) or the Radar verdict
    # (highest_risk_level, rule); failure_code is the coarser error code (card_declined).
    reason = outcome.get("reason") or obj.get("failure_code")
    return Charge(
        id=_str(obj, "id", where),
        status=status,
        amount=_amount(obj, "amount", where),
        currency=_currency(obj, where),
        customer=_opt_str(obj, "customer", where),
        card_fingerprint=(
            fingerprint if isinstance(fingerprint, str) and 0 < len(fingerprint) <= _MAX_ID
            and _encodable(fingerprint) else None
        ),
        payment_intent=_opt_str(obj, "payment_intent", where),
        failure_reason=reason if isinstance(reason, str) and reason else None,
    )


def _created_at(obj: Mapping[str, Any]) -> int:
    created = obj.get("created")
    return created if isinstance(created, int) and not isinstance(created, bool) else -1


def payment_intent_of(obj: Mapping[str, Any]) -> PaymentIntent:
    where = "payment_intent"
    latest = _opt_str(obj, "latest_charge", where)
    if latest is None:
        # API versions before 2022-11-15 list charges instead of latest_charge, newest first:
        # the latest is the one created last (the first listed on a tie), never simply the last.
        charges = [c for c in list_data(obj, "charges", where) if isinstance(c, Mapping)]
        if charges:
            newest = max(charges, key=_created_at)  # max() keeps the first listed on a tie
            latest = _opt_str(newest, "id", where + ".charges.data[]")
    return PaymentIntent(
        id=_str(obj, "id", where),
        status=_str(obj, "status", where),
        amount_received=_amount(obj, "amount_received", where, default=0),
        currency=_currency(obj, where),
        customer=_opt_str(obj, "customer", where),
        latest_charge=latest,
    )


def refund_of(obj: Mapping[str, Any]) -> Refund:
    where = "refund"
    return Refund(
        id=_str(obj, "id", where),
        amount=_amount(obj, "amount", where),
        currency=_currency(obj, where),
        status=_str(obj, "status", where),
        charge=_opt_str(obj, "charge", where),
        customer=_opt_str(obj, "customer", where),
    )


def credit_note_of(obj: Mapping[str, Any]) -> CreditNote:
    where = "credit_note"
    refunds = obj.get("refunds")
    refunded = 0
    if isinstance(refunds, list):  # current shape: [{amount_refunded, refund}, ...]
        if len(refunds) > MAX_LIST:
            raise InvalidEvent(f"{where}.refunds lists more than {MAX_LIST} entries")
        for entry in refunds:
            if not isinstance(entry, Mapping):
                raise InvalidEvent(f"{where}.refunds[] must be an object")
            refunded += _amount(entry, "amount_refunded", where + ".refunds[]", default=0)
    elif isinstance(obj.get("refund"), Mapping):  # older shape, expanded
        refunded = _amount(obj["refund"], "amount", where + ".refund")
    elif obj.get("refund") is not None:
        # Older shape, an id: the amount is unknown; take all that is not out of band as refunded,
        # so the refund.created event of that refund reports it, once.
        refunded = _amount(obj, "total", where) - _amount(obj, "out_of_band_amount", where, default=0)
    out_of_band = obj.get("out_of_band_amount")
    return CreditNote(
        id=_str(obj, "id", where),
        customer=_opt_str(obj, "customer", where),
        currency=_currency(obj, where),
        total=_amount(obj, "total", where),
        type=_opt_str(obj, "type", where) or "",
        status=_opt_str(obj, "status", where) or "",
        refunded=refunded,
        out_of_band=0 if out_of_band is None else _amount(obj, "out_of_band_amount", where),
    )


def dispute_of(obj: Mapping[str, Any]) -> Dispute:
    where = "dispute"
    return Dispute(
        id=_str(obj, "id", where),
        amount=_amount(obj, "amount", where),
        currency=_currency(obj, where),
        reason=_str(obj, "reason", where),
        charge=_opt_str(obj, "charge", where),
    )


def early_fraud_warning_of(obj: Mapping[str, Any]) -> EarlyFraudWarning:
    where = "radar.early_fraud_warning"
    return EarlyFraudWarning(
        id=_str(obj, "id", where),
        fraud_type=_str(obj, "fraud_type", where),
        charge=_opt_str(obj, "charge", where),
    )


def invoice_of(obj: Mapping[str, Any]) -> Invoice:
    where = "invoice"
    details = _map(_map(obj, "parent"), "subscription_details")
    subscription = _opt_str(details, "subscription", where + ".parent.subscription_details")
    if subscription is None:
        subscription = _opt_str(obj, "subscription", where)
    return Invoice(
        id=_str(obj, "id", where),
        created=_int(obj, "created", where),
        customer=_opt_str(obj, "customer", where),
        currency=_currency(obj, where),
        total=_amount(obj, "total", where, signed=True),  # negative: what negative_invoice reports
        amount_paid=_amount(obj, "amount_paid", where, default=0),
        status=_opt_str(obj, "status", where) or "",
        billing_reason=_opt_str(obj, "billing_reason", where) or "",
        attempt_count=_int(obj, "attempt_count", where, default=0),
        subscription=subscription,
        charge=_opt_str(obj, "charge", where),
    )


def _id_or_blank(value: Any) -> str:
    if isinstance(value, Mapping):  # expanded (price.product on request)
        value = value.get("id")
    return value if isinstance(value, str) and len(value) <= _MAX_ID and _encodable(value) else ""


def _item_of(item: Any) -> tuple[SubscriptionItem | None, int | None]:
    where = "subscription.items.data[]"
    if not isinstance(item, Mapping):
        raise InvalidEvent(f"{where} must be an object")
    end = _opt_time(item.get("current_period_end"), where)
    price = _map(item, "price") or _map(item, "plan")
    recurring = _map(price, "recurring")
    interval = recurring.get("interval", price.get("interval"))
    count = recurring.get("interval_count", price.get("interval_count", 1))
    amount = price.get("unit_amount", price.get("amount"))
    quantity = item.get("quantity", 1)
    ints = (amount, count, quantity)
    if (
        not isinstance(interval, str)
        or not is_currency(price.get("currency"))
        or any(isinstance(v, bool) or not isinstance(v, int) for v in ints)
    ):
        # Metered and tiered prices have no unit amount: they add nothing to MRR.
        return None, end
    if any(abs(v) > _MAX_INT for v in ints) or amount > MAX_AMOUNT:
        raise InvalidEvent(f"{where}: price amount, interval count or quantity is out of range")
    if amount < 0 or quantity < 0:
        raise InvalidEvent(f"{where}: price amount and quantity must not be negative")
    # Ids only name what changed (subscription_downgrade): an odd one is left out, not refused.
    ids = (_id_or_blank(item.get("id")), _id_or_blank(price.get("id")), _id_or_blank(price.get("product")))
    return SubscriptionItem(amount, quantity, str(price["currency"]), interval, count, *ids), end


def items_of(obj: Mapping[str, Any]) -> tuple[SubscriptionItem, ...]:
    """The priced items of a subscription, or of its previous_attributes when its items changed."""
    return tuple(item for raw in list_data(obj, "items", "subscription") if (item := _item_of(raw)[0]))


def subscription_of(obj: Mapping[str, Any]) -> Subscription:
    where = "subscription"
    data = list_data(obj, "items", where)
    items: list[SubscriptionItem] = []
    ends: list[int] = []
    for raw in data:
        item, end = _item_of(raw)
        if item is not None:
            items.append(item)
        if end is not None:
            ends.append(end)
    top_end = _opt_time(obj.get("current_period_end"), where)
    if top_end is not None:
        ends.append(top_end)
    return Subscription(
        id=_str(obj, "id", where),
        customer=_opt_str(obj, "customer", where),
        status=_str(obj, "status", where),
        items=tuple(items),
        current_period_end=max(ends) if ends else None,
        trial_start=_trial_time(obj, "trial_start"),
        trial_end=_trial_time(obj, "trial_end"),
    )


def _trial_time(obj: Mapping[str, Any], key: str) -> int | None:
    """trial_start or trial_end: a unix time, or None (no trial); positive and in a store's range."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if not 0 < value <= _MAX_INT:
        raise InvalidEvent(f"subscription.{key} is out of range")
    return value


# ---------------------------------------------------------------- generic facts, for the event log

# Where an object of any kind keeps the amount it is about (charge, refund, dispute: amount; a
# Checkout session: amount_total; invoice: total; payment intent: amount, else amount_received).
_AMOUNT_FIELDS = ("amount", "amount_total", "total", "amount_received", "amount_due")


def short_text(value: Any, limit: int = _MAX_ID) -> str | None:
    """A string (or an expanded object's id) fit to show and store: non-empty, at most `limit`
    characters, printable and encodable; else None. Never raises: the event log is best effort."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    return value if value.isprintable() and _encodable(value) else None


def object_id(obj: Mapping[str, Any]) -> str | None:
    return short_text(obj.get("id"))


def customer_id(obj: Mapping[str, Any]) -> str | None:
    """The customer an object belongs to; a customer object is its own."""
    return object_id(obj) if obj.get("object") == "customer" else short_text(obj.get("customer"))


def amount_of(obj: Mapping[str, Any]) -> int | None:
    """The object's amount in minor units, where it has one Stripe could send."""
    for key in _AMOUNT_FIELDS:
        value = obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_AMOUNT:
            return value
    return None


def currency_of(obj: Mapping[str, Any]) -> str | None:
    value = obj.get("currency")
    return value if isinstance(value, str) and is_currency(value) else None
