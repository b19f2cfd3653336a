"""A customer charged in a currency other than the one they have been paying in.

The store keeps each customer's set of currencies; a new currency joining a non-empty set is
the anomaly, so the count is the same whichever payment Stripe delivers first. A payment is read
from its charge and from its invoice (a customer billed by invoices only is checked too): both
add the same currency to the set, so one payment reported by both hits once, in either order.
"""

from dataclasses import dataclass
from typing import ClassVar

from billingwatch.detectors.base import Context, Severity, anomaly
from billingwatch.metrics.labels import INVOICE_PAID_EVENTS, livemode_label
from billingwatch.recording.events import Event, charge_of, invoice_of
from billingwatch.recording.plan import Check


@dataclass(frozen=True)
class CurrencyMismatch:
    name: ClassVar[str] = "currency_mismatch"
    severity: ClassVar[Severity] = "medium"
    description: ClassVar[str] = (
        "A customer paid in a currency other than the one(s) they paid in during the last memory_days."
    )
    event_types: ClassVar[frozenset[str]] = frozenset({"charge.succeeded", *INVOICE_PAID_EVENTS})

    memory_days: int = 400

    def checks(self, event: Event, context: Context) -> list[Check]:
        if event.object_kind == "invoice":
            invoice = invoice_of(event.object)
            if invoice.amount_paid <= 0:  # settled by credit or a discount: no payment in that currency
                return []
            customer, currency, amount = invoice.customer, invoice.currency, invoice.amount_paid
            invoice_id, charge_id = invoice.id, invoice.charge
        elif event.object_kind == "charge":
            charge = charge_of(event.object)
            customer, currency, amount = charge.customer, charge.currency, charge.amount
            invoice_id, charge_id = None, charge.id
        else:
            return []
        if not customer:
            return []
        mode = livemode_label(event.livemode)
        return [
            Check(
                op="distinct",
                key=f"cur:{mode}:{customer}",
                member=currency,
                at=event.created,
                ttl=self.memory_days * 86400,
                cap=16,
                anomaly=anomaly(
                    self,
                    event,
                    f"customer {customer} paid in {currency}, unlike their earlier payments",
                    customer=customer,
                    amount=amount,
                    currency=currency,
                    charge=charge_id,
                    invoice=invoice_id,
                ),
            )
        ]
