"""Card testing: failed payments with several different cards on one payment intent or customer.

Fraudsters check stolen card numbers by retrying one checkout with card after card. Each failed
attempt sends `payment_intent.payment_failed`, whose `last_payment_error.payment_method` is the
card tried. The detector keeps, per payment intent (or per customer when there is one), the
fingerprints of the cards that failed, in a `window` set: a new card failing within
window_seconds (event time) of another is an anomaly, reported once per card. Redeliveries and
replicas change nothing: the store adds the member and decides the hit atomically.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from billingwatch.detectors.base import Context, Severity, anomaly
from billingwatch.metrics.labels import livemode_label
from billingwatch.recording.events import Event, payment_intent_of
from billingwatch.recording.plan import Check


def _card_fingerprint(intent: Mapping[str, Any]) -> str | None:
    """The fingerprint of the card whose attempt failed; None for other payment methods."""
    error = intent.get("last_payment_error")
    method = error.get("payment_method") if isinstance(error, Mapping) else None
    card = method.get("card") if isinstance(method, Mapping) else None
    fingerprint = card.get("fingerprint") if isinstance(card, Mapping) else None
    return fingerprint if isinstance(fingerprint, str) and fingerprint else None


@dataclass(frozen=True)
class CardTesting:
    name: ClassVar[str] = "card_testing"
    severity: ClassVar[Severity] = "high"
    description: ClassVar[str] = (
        "Failed payments with two or more different cards on one payment intent (or customer) "
        "within window_seconds of each other in event time; reported once per card."
    )
    event_types: ClassVar[frozenset[str]] = frozenset({"payment_intent.payment_failed"})

    # Thresholds: int fields with defaults, each one a setting
    # (BILLINGWATCH_DETECTOR_CARD_TESTING_WINDOW_SECONDS).
    window_seconds: int = 3600

    def checks(self, event: Event, context: Context) -> list[Check]:
        intent = payment_intent_of(event.object)  # raises InvalidEvent on a malformed object, as built-ins do
        fingerprint = _card_fingerprint(event.object)
        if fingerprint is None:
            return []
        payer = intent.customer or intent.id
        amount = event.object.get("amount")  # what was attempted; amount_received is 0 on a failure
        return [
            Check(
                op="window",
                key=f"cardtest:{livemode_label(event.livemode)}:{payer}",
                member=fingerprint,
                at=event.created,  # event time: out-of-order delivery gives the same answer
                window=self.window_seconds,
                ttl=context.state_ttl,  # bounded memory: the set expires, and keeps at most `cap` cards
                cap=32,
                anomaly=anomaly(
                    self,
                    event,
                    f"payment intent {intent.id} failed with another card",
                    customer=intent.customer,
                    amount=amount if type(amount) is int else None,
                    currency=intent.currency,
                ),
            )
        ]
