"""The registered alerts: one module per alert, rendered and configured in the order of ALERTS.

A new alert is one module here, a promtool test and a runbook:
1. `alerts/<section>.py` (its name is the section's key in config.yml) holding `ALERT`, the
   Prometheus alert name; `COMMENT`, the text config.yml shows above the section; a frozen
   dataclass of the section's keys with their defaults (`priority: Priority`, `Duration`
   strings, numbers; `for_` is the key `for`; `knob(default, "comment")` adds a comment after
   the value) and `Config = <that class>`; `render(r, s)`, which adds the rules through the
   helpers of rules/render.py (`charges`, `by_mode`, `averaged`, `covered`, `alert`, ...).
2. The module in ALERTS below: RulesConfig gains the section, `load_config` checks its keys.
3. `billingwatch rules --print-defaults > exporter/billingwatch/rules/config.yml` and
   `billingwatch rules -o rules/billingwatch.rules.yml` (tests/test_rules.py fails on drift).
4. A test in rules/tests/*.yml naming the alert and docs/runbooks/<ALERT>.md: tests/test_rules.py
   refuses a registered alert without either.
"""

from typing import Any, Protocol

from billingwatch.rules.alerts import (
    anomaly,
    authentication_failure_spike,
    charge_failure_spike,
    churn_spike,
    dispute_loss_rate,
    early_fraud_warnings,
    events_quarantined,
    exporter_down,
    fraud_spike,
    mrr_drop,
    payout_failed,
    refund_spike,
    revenue_drop,
    review_backlog,
    silent_lapse,
    store_down,
    store_nearly_full,
    trial_conversion_drop,
    webhook_lag,
    webhook_silence,
)
from billingwatch.rules.render import Rules


class AlertModule(Protocol):
    """What config.py and rulefile.py read from an alert module."""

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
    churn_spike,
    trial_conversion_drop,
    silent_lapse,
    webhook_lag,
    webhook_silence,
    refund_spike,
    anomaly,
    exporter_down,
    store_down,
    store_nearly_full,
    events_quarantined,
    payout_failed,
    dispute_loss_rate,
    authentication_failure_spike,
    review_backlog,
)


def section(module: AlertModule) -> str:
    """The module's key in config.yml and attribute of RulesConfig: its own name."""
    return module.__name__.rpartition(".")[2]
