"""BillingWatchEventsQuarantined (meta): signed Stripe events wait in the quarantine, unrecorded."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert
from billingwatch.rules.values import Duration

ALERT = "BillingWatchEventsQuarantined"

COMMENT = """\
BillingWatchEventsQuarantined: signed Stripe events this version could not record wait in the
quarantine (/api/quarantine): the billing figures miss them until `billingwatch requeue`
records them after an upgrade. Fires while at least `min_entries` wait."""


@dataclass(frozen=True)
class EventsQuarantined:
    """BillingWatchEventsQuarantined: at least `min_entries` in billingwatch_events_quarantine_entries."""

    priority: Priority = "P3"
    min_entries: int = 1
    for_: Duration = "1m"


Config = EventsQuarantined


def render(r: Rules, s: EventsQuarantined) -> None:
    c = r.config
    expr = f"max by ({r.by('livemode')}) (billingwatch_events_quarantine_entries{c.matchers()}) >= {s.min_entries}"
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "events_quarantined", "priority": s.priority},
        "{{ $value | humanize }} Stripe events are quarantined, not recorded",
        "{{ $value | humanize }} signed Stripe events (livemode={{ $labels.livemode }}) could not be recorded by "
        "this version and wait in the quarantine (/api/quarantine, the explorer at /events): the billing "
        "figures miss them. Upgrade, then run `billingwatch requeue`.",
    )
