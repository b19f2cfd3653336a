"""BillingWebhookSilence: no Stripe event for much longer than usual."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert
from billingwatch.rules.values import Duration, seconds

ALERT = "BillingWebhookSilence"

COMMENT = """\
BillingWebhookSilence: no event has arrived for as long as this account normally takes to
receive `expected_events` events (from its rate over the baseline), and at least
`min_silence`. Catches an endpoint Stripe disabled or a deploy that broke the route. Lower
`expected_events` to hear sooner; raise `min_silence` for bursty traffic. Not held back
during warm-up: a rate over a partial baseline is an underestimate, so it only allows a
longer silence (it errs quiet) while still catching an endpoint that breaks in week one."""


@dataclass(frozen=True)
class WebhookSilence:
    """BillingWebhookSilence: no event received for longer than the time this account usually
    takes to receive `expected_events` events (its event rate over `baseline`), and at least
    `min_silence`."""

    priority: Priority = "P2"
    expected_events: int = 10
    min_silence: Duration = "30m"
    baseline: Duration = "7d"
    for_: Duration = "5m"


Config = WebhookSilence


def render(r: Rules, s: WebhookSilence) -> None:
    c = r.config
    mode = r.by("livemode")
    last = r.record(
        "livemode:billingwatch_last_event_received_timestamp_seconds:max",
        f"max by ({mode}) (billingwatch_last_event_received_timestamp_seconds{c.matchers()})",
    )
    events = r.record(
        f"livemode:billingwatch_events:rate{s.baseline}",
        f"sum by ({mode}) (max by ({r.by('type', 'livemode')}) "
        f"(rate(billingwatch_events_total{c.matchers()}[{s.baseline}])))",
    )
    # The silence allowed is the time this account usually takes to receive `expected_events`
    # events: an account with no traffic (rate 0, allowance +Inf) never alerts.
    expr = f"""\
  time() - {last}
> on ({mode})
  clamp_min({s.expected_events} / {events}, {seconds(s.min_silence):g})"""
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "webhook_silence", "priority": s.priority},
        "No Stripe event received for {{ $value | humanizeDuration }}",
        "No Stripe event (livemode={{ $labels.livemode }}) has arrived for {{ $value | humanizeDuration }}, "
        f"although this account usually receives {s.expected_events} in less time (event rate over the last "
        f"{s.baseline}). Stripe may have disabled the endpoint, or a deploy broke the route.",
    )
