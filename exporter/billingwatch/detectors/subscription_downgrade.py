"""A subscription update that cuts what it bills: an item removed, fewer seats, or a cheaper price.

It compares the items with `data.previous_attributes.items` (Stripe sends the whole previous
list when items change), by unit amounts normalised per month, never by price names. Only a net
cut of the subscription's MRR is reported: swapping one item for a dearer one is not a downgrade.
Severity grows with the cut; a cut no request asked for (no `event.request.id` and no
subscription schedule) is one severity higher (docs/detectors.md says why).
"""

from dataclasses import dataclass
from typing import Any, ClassVar

from billingwatch.detectors.base import Context, Severity, anomaly
from billingwatch.metrics.labels import livemode_label
from billingwatch.money import monthly_amount
from billingwatch.recording.events import Event, SubscriptionItem, items_of, subscription_of
from billingwatch.recording.plan import Check

_ONE_HIGHER: dict[Severity, Severity] = {"low": "medium", "medium": "high", "high": "critical", "critical": "critical"}


def _monthly(item: SubscriptionItem, quantity: int | None = None) -> float:
    return monthly_amount(item.unit_amount, item.quantity if quantity is None else quantity, item.interval,
                          item.interval_count)


def cuts(before: tuple[SubscriptionItem, ...], after: tuple[SubscriptionItem, ...]) -> list[dict[str, Any]]:
    """Each previous item that was removed, lost quantity or moved to a cheaper price of its product."""
    after_by_id = {item.id: item for item in after if item.id}
    before_ids = {item.id for item in before}
    found: list[dict[str, Any]] = []
    for old in before:
        new = after_by_id.get(old.id) if old.id else None
        if new is None:  # replaced by a new item of the same product (a price change), or removed
            new = next((i for i in after if i.product and i.product == old.product and i.id not in before_ids), None)
        kinds = []
        if new is None:
            kinds.append("removed")
        else:
            if new.currency == old.currency and _monthly(new, 1) < _monthly(old, 1):
                kinds.append("cheaper_price")
            if new.quantity < old.quantity:
                kinds.append("quantity_cut")
        if kinds:
            found.append({
                "kinds": kinds, "product": old.product or None,
                "price_before": old.price or None, "price_after": new.price or None if new else None,
                "quantity_before": old.quantity, "quantity_after": new.quantity if new else 0,
            })
    return found


@dataclass(frozen=True)
class SubscriptionDowngrade:
    name: ClassVar[str] = "subscription_downgrade"
    severity: ClassVar[Severity] = "medium"
    severities: ClassVar[tuple[Severity, ...]] = ("critical", "high", "medium", "low")
    description: ClassVar[str] = (
        "A subscription update removed an item, cut a quantity or moved to a cheaper price of the same "
        "product, lowering its MRR: high from high_cut_percent of the MRR, medium from medium_cut_percent, "
        "else low; one higher when no request and no schedule made the change."
    )
    event_types: ClassVar[frozenset[str]] = frozenset({"customer.subscription.updated"})

    high_cut_percent: int = 50
    medium_cut_percent: int = 20

    def checks(self, event: Event, context: Context) -> list[Check]:
        if "items" not in event.previous_attributes:
            return []
        sub = subscription_of(event.object)
        before, after = items_of(event.previous_attributes), sub.items
        found = cuts(before, after)
        currencies = {i.currency for i in before}
        mrr_before = sum(_monthly(i) for i in before)
        mrr_after = sum(_monthly(i) for i in after if i.currency in currencies)
        if not found or len(currencies) != 1 or mrr_after >= mrr_before:
            return []
        percent = 100 * (mrr_before - mrr_after) / mrr_before
        graded: Severity = ("high" if percent >= self.high_cut_percent
                            else "medium" if percent >= self.medium_cut_percent else "low")
        schedule = event.object.get("schedule")
        origin = "request" if event.request_id else "schedule" if schedule else "none"
        if origin == "none":
            graded = _ONE_HIGHER[graded]
        (currency,) = currencies
        lost = round(mrr_before) - round(mrr_after)
        return [
            Check(
                op="once",
                key=f"subdown:{livemode_label(event.livemode)}:{sub.id}:{event.id}",
                ttl=context.state_ttl,
                anomaly=anomaly(
                    self,
                    event,
                    f"subscription {sub.id} lost {percent:.0f}% of its MRR "
                    f"({', '.join(k for c in found for k in c['kinds'])})"
                    + ("" if origin != "none" else ", with no request or schedule behind it"),
                    severity=graded,
                    customer=sub.customer,
                    subscription=sub.id,
                    amount=lost,
                    currency=currency,
                    details={
                        "changes": found,
                        "mrr_before": round(mrr_before),
                        "mrr_after": round(mrr_after),
                        "cut_percent": round(percent, 1),
                        "origin": origin,
                        "request": event.request_id,
                        "schedule": schedule if isinstance(schedule, str) else None,
                    },
                ),
            )
        ]
