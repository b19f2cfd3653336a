"""BillingAuthenticationFailureSpike: 3-D Secure failures above their usual count."""

from dataclasses import dataclass

from billingwatch.levels import Priority
from billingwatch.rules.render import Rules, alert, averaged, covered
from billingwatch.rules.values import Duration

ALERT = "BillingAuthenticationFailureSpike"

COMMENT = """\
BillingAuthenticationFailureSpike: PaymentIntent failures with last_payment_error.code
authentication_required (3-D Secure not completed: a broken authentication flow, an issuer's
ACS outage, a new SCA exemption refused). Fires when the window's count is at least `min_count`
and more than `rise_factor` times the usual count per window over the baseline; quiet until
the baseline is whole (warm-up)."""

CODE = 'code="authentication_required"'


@dataclass(frozen=True)
class AuthenticationFailureSpike:
    """BillingAuthenticationFailureSpike (detector authentication_failure_spike): at least
    `min_count` authentication_required PaymentIntent failures in `window`, and more than
    `rise_factor` times the average per window over `baseline`."""

    priority: Priority = "P2"
    min_count: int = 10
    rise_factor: float = 3.0
    window: Duration = "1h"
    baseline: Duration = "7d"
    for_: Duration = "10m"


Config = AuthenticationFailureSpike


def render(r: Rules, s: AuthenticationFailureSpike) -> None:
    c = r.config
    mode = r.by("livemode")
    failures = r.record(
        f"livemode:billingwatch_payment_intent_authentication_failures:increase{s.window}",
        f"sum by ({mode}) (max by ({r.by('code', 'livemode')}) "
        f"(increase(billingwatch_payment_intent_failures_total{c.matchers(CODE)}[{s.window}])))",
    )
    usual = averaged(r, failures, s.baseline)
    full = covered(r, "billingwatch_payment_intent_failures_total", mode, s.window, s.baseline, CODE)
    expr = f"""\
  {failures} >= {s.min_count}
and on ({mode})
  {failures} > {s.rise_factor:g} * {usual}{full}"""
    alert(
        r, ALERT, expr, s.for_,
        {"detector": "authentication_failure_spike", "priority": s.priority},
        "{{ $value | humanize }} payments failed 3-D Secure authentication in the last " + s.window,
        "{{ $value | humanize }} PaymentIntent attempts (livemode={{ $labels.livemode }}) failed with "
        "authentication_required in the last " + s.window + f", more than {s.rise_factor:g} times the usual "
        f"count per {s.window} over the last {s.baseline}. A broken 3-D Secure flow or an issuer outage.",
    )
