"""Two renewal invoices for one subscription close together: a billing-anchor or timezone bug.

The original BillingWatch's timezone_billing_error (invoiced twice within 26 h): the default
window is those 26 h, inclusive; a monthly renewal is never that close.
"""

from dataclasses import dataclass
from typing import ClassVar

from billingwatch.detectors.base import Context, Severity, anomaly
from billingwatch.metrics.labels import livemode_label
from billingwatch.recording.events import Event, invoice_of
from billingwatch.recording.plan import Check


@dataclass(frozen=True)
class DoubleInvoice:
    name: ClassVar[str] = "double_invoice"
    severity: ClassVar[Severity] = "high"
    description: ClassVar[str] = (
        "Two subscription_cycle invoices for the same subscription created within window_seconds."
    )
    event_types: ClassVar[frozenset[str]] = frozenset(
        {"invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded"}
    )

    window_seconds: int = 26 * 3600

    def checks(self, event: Event, context: Context) -> list[Check]:
        invoice = invoice_of(event.object)
        if invoice.billing_reason != "subscription_cycle" or not invoice.subscription:
            return []
        # The invoice's own created time: every event of one invoice agrees on it.
        return [
            Check(
                op="window",
                key=f"dblinv:{livemode_label(event.livemode)}:{invoice.subscription}",
                member=invoice.id,
                at=invoice.created,
                window=self.window_seconds,
                ttl=max(context.state_ttl, 2 * self.window_seconds),
                gap_detail="gap_seconds",  # between the two invoices' created times
                anomaly=anomaly(
                    self,
                    event,
                    f"subscription {invoice.subscription} got a second renewal invoice "
                    f"{invoice.id} within {self.window_seconds // 3600} h",
                    customer=invoice.customer,
                    invoice=invoice.id,
                    subscription=invoice.subscription,
                    amount=invoice.total,
                    currency=invoice.currency,
                ),
            )
        ]
