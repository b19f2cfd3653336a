"""Two distinct successful charges to the same payer, same amount and currency, close in time.

The payer is the customer, or the card fingerprint for guest payments. A payment reported by
several events (charge.succeeded, payment_intent.succeeded) is one member of the window set,
keyed by its charge id, so it never pairs with itself; failed attempts never enter.
"""

from dataclasses import dataclass
from typing import ClassVar

from billingwatch.detectors.base import Context, Severity, anomaly
from billingwatch.metrics.labels import livemode_label
from billingwatch.recording.events import Event, charge_of, payment_intent_of
from billingwatch.recording.plan import Check


@dataclass(frozen=True)
class DuplicateCharge:
    name: ClassVar[str] = "duplicate_charge"
    severity: ClassVar[Severity] = "critical"
    description: ClassVar[str] = (
        "Two distinct successful charges to the same customer (or card), same amount and currency, "
        "within window_seconds of each other in event time."
    )
    event_types: ClassVar[frozenset[str]] = frozenset({"charge.succeeded", "payment_intent.succeeded"})

    window_seconds: int = 300

    def checks(self, event: Event, context: Context) -> list[Check]:
        payer: str | None
        charge_id: str | None
        if event.object_kind == "charge":
            charge = charge_of(event.object)
            payer = charge.customer or (charge.card_fingerprint and "card:" + charge.card_fingerprint)
            charge_id, amount, currency = charge.id, charge.amount, charge.currency
        else:
            intent = payment_intent_of(event.object)
            payer, charge_id = intent.customer, intent.latest_charge
            amount, currency = intent.amount_received, intent.currency
        if not payer or not charge_id or amount <= 0:
            return []
        mode = livemode_label(event.livemode)
        return [
            Check(
                op="window",
                key=f"dup:{mode}:{payer}:{currency}:{amount}",
                member=charge_id,
                at=event.created,
                window=self.window_seconds,
                ttl=context.state_ttl,
                anomaly=anomaly(
                    self,
                    event,
                    f"charge {charge_id} repeats an earlier charge of the same amount",
                    customer=payer,
                    charge=charge_id,
                    amount=amount,
                    currency=currency,
                ),
            )
        ]
