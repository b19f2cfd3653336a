"""A customer charged in a currency other than the one they have been paying in.

The store keeps each customer's set of currencies; a new currency joining a non-empty set is
the anomaly, so the count is the same whichever charge Stripe delivers first.
"""

from dataclasses import dataclass
from typing import ClassVar

from billingwatch.detectors.base import Context, Severity, anomaly
from billingwatch.metrics.labels import livemode_label
from billingwatch.recording.events import Event, charge_of
from billingwatch.recording.plan import Check


@dataclass(frozen=True)
class CurrencyMismatch:
    name: ClassVar[str] = "currency_mismatch"
    severity: ClassVar[Severity] = "medium"
    description: ClassVar[str] = (
        "A customer paid in a currency other than the one(s) they paid in during the last memory_days."
    )
    event_types: ClassVar[frozenset[str]] = frozenset({"charge.succeeded"})

    memory_days: int = 400

    def checks(self, event: Event, context: Context) -> list[Check]:
        charge = charge_of(event.object)
        if not charge.customer:
            return []
        mode = livemode_label(event.livemode)
        return [
            Check(
                op="distinct",
                key=f"cur:{mode}:{charge.customer}",
                member=charge.currency,
                at=event.created,
                ttl=self.memory_days * 86400,
                cap=16,
                anomaly=anomaly(
                    self,
                    event,
                    f"customer {charge.customer} paid in {charge.currency}, "
                    "unlike their earlier payments",
                    customer=charge.customer,
                    charge=charge.id,
                    amount=charge.amount,
                    currency=charge.currency,
                ),
            )
        ]
