"""The registered alerts: one module per alert, rendered and configured in the order of ALERTS.

Adding an alert is one module here, a promtool test and a runbook:
1. `rules/alerts/<section>.py`; the module name is the alert's section in config.yml. It holds
   - `ALERT`: the Prometheus alert name, e.g. "BillingPayoutDelay";
   - `COMMENT`: the text config.yml prints above the section (what it catches, when to tune it);
   - a frozen dataclass of the section's keys WITH their defaults (`severity` from
     billingwatch.detectors.Severity, Duration strings, numbers; `for_` is the YAML key `for`),
     `knob(default, "comment")` adding a comment after the value, and `Config = <that class>`;
   - `render(r, s)`: adds the rule through the helpers of rules/render.py (`charges`, `by_mode`,
     `averaged`, `covered`, ... for recording rules, `alert(r, ALERT, ...)` for the alert).
2. Add the module to ALERTS below; RulesConfig gains the section and `load_config` checks it.
3. Regenerate: `billingwatch rules --print-defaults > exporter/billingwatch/rules/config.yml`
   and `billingwatch rules -o rules/billingwatch.rules.yml` (tests/test_rules.py fails on drift).
4. A promtool test in rules/tests/ where the alert fires, and docs/runbooks/<ALERT>.md (saying
   how to confirm it in Stripe): tests/test_rules.py refuses an alert without either.
"""

from typing import Any, Protocol

from billingwatch.rules.alerts import (
    anomaly,
    charge_failure_spike,
    early_fraud_warnings,
    exporter_down,
    fraud_spike,
    mrr_drop,
    refund_spike,
    revenue_drop,
    silent_lapse,
    store_down,
    webhook_lag,
    webhook_silence,
)
from billingwatch.rules.render import Rules


class AlertModule(Protocol):
    """What config.py and render.py read from an alert module."""

    __name__: str
    ALERT: str
    COMMENT: str
    Config: type[Any]

    def render(self, r: Rules, s: Any, /) -> None: ...


ALERTS: tuple[AlertModule, ...] = (
    charge_failure_spike,
    fraud_spike,
    early_fraud_warnings,
    revenue_drop,
    mrr_drop,
    silent_lapse,
    webhook_lag,
    webhook_silence,
    refund_spike,
    anomaly,
    exporter_down,
    store_down,
)


def section(module: AlertModule) -> str:
    """The module's key in config.yml and attribute of RulesConfig: its own name."""
    return module.__name__.rpartition(".")[2]
