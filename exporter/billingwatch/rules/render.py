"""The shared rule machinery the alert modules and growth.py render with (the rule file itself: rulefile.py).

Aggregation rules, the same in every query:
- The store-backed figures are global: every replica exposes the same value, so replicas are
  folded with `max by (<the metric's own labels>)`, never summed; one replica or three give
  the same answer, whatever labels tell the replicas apart (instance, pod, ...).
- rate()/increase() are taken per series before any aggregation, so a counter reset (an
  exporter restart with the in-process store) neither fires nor masks an alert.
- Counts may be summed across currencies; money never is. Count-based alerts read the
  currency-free families (billingwatch_charge_outcomes_total, billingwatch_disputes_total),
  which exist at 0 from the exporter's start, so increase() sees the first event of a new
  currency too.
- An alert comparing with an average over a baseline waits until that baseline is whole
  (`covered`): no alert from a half-filled average during warm-up or after a long gap.
"""

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from billingwatch.levels import SERVICE, alert_labels
from billingwatch.metrics.accounts import ACCOUNT_LABEL
from billingwatch.rules.values import seconds

if TYPE_CHECKING:  # config.py imports the alert modules, which import this one
    from billingwatch.rules.config import RulesConfig


@dataclass(frozen=True)
class Rules:
    """Recording rules (each name once, in dependency order) followed by alerting rules."""

    config: "RulesConfig"
    records: dict[str, str]
    alerts: list[dict[str, Any]]

    def record(self, name: str, expr: str) -> str:
        if self.records.setdefault(name, expr) != expr:  # pragma: no cover - a programming error
            raise ValueError(f"recording rule {name} defined twice with different expressions")
        return name

    def by(self, *labels: str) -> str:
        """A label list: `labels` plus the labels kept across replicas."""
        return ", ".join(dict.fromkeys([*labels, *kept_labels(self.config)]))


def kept_labels(config: "RulesConfig") -> list[str]:
    """Labels kept in every aggregation: `account` (every family carries it: each Stripe account
    of BILLINGWATCH_ACCOUNTS_FILE is aggregated and alerted on apart), the selector's
    equality-matched labels (constant within one deployment, so keeping them only tells
    deployments apart) and `keep_labels`."""
    pinned = re.findall(r'([a-zA-Z_]\w*)\s*=\s*"', config.selector)
    return list(dict.fromkeys([ACCOUNT_LABEL, *pinned, *config.keep_labels]))


# --- recording rules: each helper registers what it needs and returns the series name ---


def increase(r: Rules, family: str, labels: tuple[str, ...], window: str) -> str:
    """The recorded increase of counter `family` over `window` by `labels` (its level names them
    sorted); replicas folded with max, since each counts the same events in the shared store."""
    return r.record(
        f"{'_'.join(sorted(labels))}:{family}:increase{window}",
        f"max by ({r.by(*labels)}) (increase({family}_total{r.config.matchers()}[{window}]))",
    )


def charges(r: Rules, window: str) -> str:
    """Charges by status, currency and mode over `window`."""
    return increase(r, "billingwatch_charges", ("status", "currency", "livemode"), window)


def charge_outcomes(r: Rules, window: str) -> str:
    """Charges by status and mode over `window`, all currencies (a count; exists from start)."""
    return increase(r, "billingwatch_charge_outcomes", ("status", "livemode"), window)


def charge_amount(r: Rules, window: str) -> str:
    return increase(r, "billingwatch_charge_amount", ("status", "currency", "livemode"), window)


def mrr_movements(r: Rules, window: str) -> str:
    """MRR moved over `window` by kind, per currency and mode: positive amounts, churn and
    contraction counted as the MRR lost (money: never summed across currencies)."""
    return increase(r, "billingwatch_mrr_movement_amount", ("kind", "currency", "livemode"), window)


def trials_ended(r: Rules, window: str) -> str:
    """Trials ended over `window` by outcome (converted, expired) and mode (a count; exists from start)."""
    return increase(r, "billingwatch_trials_ended", ("outcome", "livemode"), window)


def trial_conversion(r: Rules, window: str) -> str:
    """Converted / ended trials over `window` per mode; no sample while no trial ended (no 0/0)."""
    ended = trials_ended(r, window)
    mode = r.by("livemode")
    return r.record(
        f"livemode:billingwatch_trials_ended:conversion_ratio{window}",
        f'sum by ({mode}) ({ended}{{outcome="converted"}}) / (sum by ({mode}) ({ended}) > 0)',
    )


def averaged(r: Rules, series: str, baseline: str) -> str:
    """The average of a recorded series over `baseline`: cheap, it reads recorded samples only."""
    return r.record(f"{series}_avg{baseline}", f"avg_over_time({series}[{baseline}])")


def by_mode(r: Rules, metric: str, labels: tuple[str, ...], window: str) -> str:
    """A counter's increase over `window` summed over `labels` (counts, never money) per mode."""
    c = r.config
    name = metric.removesuffix("_total")
    return r.record(
        f"livemode:{name}:increase{window}",
        f"sum by ({r.by('livemode')}) (max by ({r.by(*labels, 'livemode')}) "
        f"(increase({metric}{c.matchers()}[{window}])))",
    )


def duration(total: float) -> str:
    """Seconds as a Prometheus duration: duration(8 * 86400) == "8d", duration(5400) == "1h30m"."""
    rest, parts = int(total), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def covered(r: Rules, metric: str, labels: str, window: str | None, baseline: str, *pins: str) -> str:
    """`and on (labels)` clauses that hold only while the raw `metric` (pinned by `pins`) was
    scraped within the last tolerance (an hour), within the tolerance before the start of the
    current `window`, and before the start of the oldest window averaged over `baseline`: the
    value and the average it is compared with both span their full length.

    A fresh install (or a new currency) waits `window` + `baseline`; an exporter that stops
    being scraped, or a Prometheus outage longer than the window, shuts the gate until a whole
    window has been seen again. Gaps up to the tolerance (a restart) keep it open. The raw
    metric, not a recorded series, is checked because rules keep evaluating over old samples
    when scrapes stop.
    """
    c = r.config
    selector = f"{metric}{c.matchers(*pins)}"
    tolerance = duration(max(3600.0, 2 * seconds(c.interval)))
    starts = [0.0, seconds(window)] if window else [0.0]
    starts.append(seconds(window or "0s") + seconds(baseline))
    offsets = [f" offset {duration(start)}" if start else "" for start in starts]
    return "".join(
        f"\nand on ({labels})\n  max by ({labels}) (present_over_time({selector}[{tolerance}]{offset}))"
        for offset in offsets
    )


def quantile_name(q: float) -> str:
    digits = f"{q:.6f}".rstrip("0").split(".")[1] or "0"
    return f"p{digits}"


# --- alerts ---


def alert(
    r: Rules, name: str, expr: str, for_: str, labels: dict[str, str], summary: str, description: str
) -> None:
    """Add the alerting rule `name`, linked to its runbook <runbook_url>/<name>.md. A `priority`
    label (P1..P4) brings its `severity` (critical, warning, info); every alert carries `service`."""
    prio = labels.get("priority")
    labels = {**{k: v for k, v in labels.items() if k != "priority"},
              **(alert_labels(prio) if prio else {"service": SERVICE})}
    r.alerts.append(
        {
            "alert": name,
            "expr": expr,
            "for": for_,
            "labels": labels,
            "annotations": {
                "summary": summary,
                "description": description,
                "runbook_url": f"{r.config.runbook_url.rstrip('/')}/{name}.md",
            },
        }
    )


def pct(ratio: float) -> str:
    """A ratio as a percentage for descriptions: pct(0.15) == "15%"."""
    return f"{ratio * 100:g}%"
