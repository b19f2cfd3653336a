"""An invoice whose total is below zero: a promotion or credit stacked past the price."""

from dataclasses import dataclass
from typing import ClassVar

from billingwatch.detectors.base import Context, Severity, anomaly
from billingwatch.metrics.labels import livemode_label
from billingwatch.recording.events import Event, invoice_of
from billingwatch.recording.plan import Check


@dataclass(frozen=True)
class NegativeInvoice:
    name: ClassVar[str] = "negative_invoice"
    severity: ClassVar[Severity] = "medium"
    description: ClassVar[str] = "An invoice whose total is below zero; reported once per invoice."
    event_types: ClassVar[frozenset[str]] = frozenset(
        {
            "invoice.created", "invoice.finalized", "invoice.updated", "invoice.paid",
            "invoice.payment_succeeded", "invoice.payment_failed", "invoice.upcoming",
        }
    )

    def checks(self, event: Event, context: Context) -> list[Check]:
        invoice = invoice_of(event.object)
        if invoice.total >= 0:
            return []
        return [
            Check(
                op="once",
                key=f"neginv:{livemode_label(event.livemode)}:{invoice.id}",
                ttl=context.state_ttl,
                anomaly=anomaly(
                    self,
                    event,
                    f"invoice {invoice.id} has a negative total",
                    customer=invoice.customer,
                    invoice=invoice.id,
                    subscription=invoice.subscription,
                    amount=invoice.total,
                    currency=invoice.currency,
                ),
            )
        ]
