"""A large single refund, and a customer's refunds adding up over a day (event time).

A refund is known by its id whichever event carries it (refund.created/updated, refund.failed,
charge.refunded's listed refunds), so it is judged once. A post-payment credit note reports the
part it credited without a refund (customer balance, out of band): its refunded part arrives as
refunds. Failed and canceled refunds never count: their id is claimed so a late copy of the same
refund in another state is not judged either.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from billingwatch.detectors.base import Context, Severity, anomaly
from billingwatch.detectors.per_currency import PerCurrency
from billingwatch.metrics.labels import REFUND_EVENTS, livemode_label
from billingwatch.recording.events import Event, charge_of, credit_note_of, list_data, refund_of
from billingwatch.recording.plan import Check

_VOID = frozenset({"failed", "canceled"})


@dataclass(frozen=True)
class _Refunded:
    id: str  # refund or credit note id
    amount: int
    currency: str
    status: str
    created: int
    customer: str | None
    charge: str | None
    invoice: str | None = None


def _created(obj: Mapping[str, Any], default: int) -> int:
    value = obj.get("created")
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 10**15 else default


def refunded(event: Event) -> Iterator[_Refunded]:
    """The refunds (and credit-note credits) this event reports."""
    obj, at = event.object, event.created
    if event.type in REFUND_EVENTS and event.object_kind == "refund":
        r = refund_of(obj)
        yield _Refunded(r.id, r.amount, r.currency, r.status, _created(obj, at), r.customer, r.charge)
    elif event.type == "charge.refunded" and event.object_kind == "charge":
        charge = charge_of(obj)
        for raw in list_data(obj, "refunds", "charge"):
            if isinstance(raw, Mapping):
                r = refund_of(raw)
                yield _Refunded(r.id, r.amount, r.currency, r.status, _created(raw, at),
                                r.customer or charge.customer, charge.id)
    elif event.type == "credit_note.created" and event.object_kind == "credit_note":
        note = credit_note_of(obj)
        credited = note.total - note.refunded
        invoice = obj.get("invoice") if isinstance(obj.get("invoice"), str) else None
        if note.type == "post_payment" and note.status != "void" and credited > 0:
            yield _Refunded(note.id, credited, note.currency, "succeeded", _created(obj, at), note.customer, None,
                            invoice)


@dataclass(frozen=True)
class LargeRefund:
    name: ClassVar[str] = "large_refund"
    severity: ClassVar[Severity] = "medium"
    severities: ClassVar[tuple[Severity, ...]] = ("high", "medium")
    description: ClassVar[str] = (
        "A refund (or a post-payment credit note's credit) at or above single_refund (medium), or a "
        "customer's refunds within window_seconds reaching customer_total (high); per currency, in major "
        "units. Failed and canceled refunds never count."
    )
    event_types: ClassVar[frozenset[str]] = frozenset({*REFUND_EVENTS, "charge.refunded", "credit_note.created"})

    single_refund: PerCurrency = PerCurrency(  # noqa: RUF009 (immutable: a str)
        "usd=1000,eur=1000,gbp=1000,cad=1500,aud=1500,chf=1000,jpy=150000")
    customer_total: PerCurrency = PerCurrency(  # noqa: RUF009 (immutable: a str)
        "usd=2500,eur=2500,gbp=2000,cad=3500,aud=4000,chf=2500,jpy=400000")
    window_seconds: int = 86400

    def checks(self, event: Event, context: Context) -> list[Check]:
        mode = livemode_label(event.livemode)
        checks: list[Check] = []
        for r in refunded(event):
            key = f"lrefund:{mode}:{r.id}"
            if r.status in _VOID:
                checks.append(Check(op="once", key=key, ttl=context.state_ttl))  # never judged later
                continue
            ids = {"customer": r.customer, "charge": r.charge, "invoice": r.invoice, "amount": r.amount,
                   "currency": r.currency, "details": {"refund": r.id}}
            single = self.single_refund.minor(r.currency)
            if single is not None and r.amount >= single:
                checks.append(Check(op="once", key=key, ttl=context.state_ttl, anomaly=anomaly(
                    self, event, f"refund {r.id} of {r.amount} {r.currency} (minor units) is at or above "
                    f"the single-refund threshold", severity="medium", **ids)))
            total = self.customer_total.minor(r.currency)
            if total is not None and r.customer:
                checks.append(Check(
                    op="sum", key=f"refundsum:{mode}:{r.customer}:{r.currency}", member=r.id, amount=r.amount,
                    at=r.created, window=self.window_seconds, threshold=total, cap=64,
                    ttl=max(context.state_ttl, 2 * self.window_seconds),
                    anomaly=anomaly(self, event, f"customer {r.customer}'s refunds within "
                                    f"{self.window_seconds // 3600} h reached the threshold with {r.id}",
                                    severity="high", **ids)))
        return checks
