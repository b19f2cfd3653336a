"""The alerting configuration: thresholds, windows and the target selector, read from YAML.

The defaults live in one file, `config.yml` beside this module (linked from `rules/config.yml`
in the repository), with a comment on each threshold. A user's file only holds what it
changes; `load_config` lays it over the defaults and checks every key and value.
"""

import re
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, NewType, TypeVar, get_args, get_origin

import yaml

from billingwatch.config import ConfigError

Duration = NewType("Duration", str)  # a Prometheus duration: "30s", "10m", "1h30m", "7d"
Severity = NewType("Severity", str)  # critical, high, medium or low

SEVERITIES = ("critical", "high", "medium", "low")
_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
_UNIT_SECONDS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def seconds(duration: str) -> float:
    """A Prometheus duration in seconds: seconds("1h30m") == 5400."""
    match = _DURATION.match(duration)
    if not duration or match is None:
        raise ConfigError(f"not a Prometheus duration: {duration!r}")
    return sum(int(match.group(2 * i + 2) or 0) * unit for i, unit in enumerate(_UNIT_SECONDS))


@dataclass(frozen=True)
class ChargeFailureSpike:
    """BillingChargeFailureSpike: failed / (succeeded + failed) charges over `window` > `ratio`,
    when at least `min_charges` charges happened in the window."""

    severity: Severity
    ratio: float
    min_charges: int
    window: Duration
    for_: Duration


@dataclass(frozen=True)
class FraudSpike:
    """BillingFraudSpike: disputes / successful charges over `window` > `dispute_ratio` with at
    least `min_charges` successful charges, or at least `max_disputes` disputes in the window."""

    severity: Severity
    dispute_ratio: float
    min_charges: int
    max_disputes: int
    window: Duration
    for_: Duration


@dataclass(frozen=True)
class EarlyFraudWarnings:
    """BillingEarlyFraudWarningsRising (detector fraud_spike): at least `min_count` Radar early
    fraud warnings in `window`, and more than `rise_factor` times the average per window over
    `baseline`."""

    severity: Severity
    min_count: int
    rise_factor: float
    window: Duration
    baseline: Duration
    for_: Duration


@dataclass(frozen=True)
class RevenueDrop:
    """BillingRevenueDrop: per currency, successful charge volume over `window` more than
    `drop_ratio` below its average per window over `baseline`, for currencies averaging at
    least `min_daily_charges` successful charges per window."""

    severity: Severity
    drop_ratio: float
    min_daily_charges: int
    window: Duration
    baseline: Duration
    for_: Duration


@dataclass(frozen=True)
class MrrDrop:
    """BillingMRRDrop (detector revenue_drop): per currency, MRR more than `drop_ratio` below
    its average over `baseline`."""

    severity: Severity
    drop_ratio: float
    baseline: Duration
    for_: Duration


@dataclass(frozen=True)
class SilentLapse:
    """BillingSilentLapse: at least `min_lapsed` subscriptions in billingwatch_subscriptions_lapsed."""

    severity: Severity
    min_lapsed: int
    for_: Duration


@dataclass(frozen=True)
class WebhookLag:
    """BillingWebhookLag: the `quantile` of webhook delivery lag over `window` above `threshold`,
    when at least `min_events` events were recorded in the window."""

    severity: Severity
    quantile: float
    threshold: Duration
    min_events: int
    window: Duration
    for_: Duration


@dataclass(frozen=True)
class WebhookSilence:
    """BillingWebhookSilence: no event received for longer than the time this account usually
    takes to receive `expected_events` events (its event rate over `baseline`), and at least
    `min_silence`."""

    severity: Severity
    expected_events: int
    min_silence: Duration
    baseline: Duration
    for_: Duration


@dataclass(frozen=True)
class RefundSpike:
    """BillingRefundSpike: per currency, refunded / successful charge amount over `window` >
    `ratio`, when at least `min_charges` successful charges in that currency in the window."""

    severity: Severity
    ratio: float
    min_charges: int
    window: Duration
    for_: Duration


@dataclass(frozen=True)
class Anomaly:
    """BillingAnomalyDetected: any increase of billingwatch_anomalies_total over `window`;
    detector and severity come from the anomaly's own labels."""

    window: Duration
    for_: Duration


@dataclass(frozen=True)
class MetaAlert:
    """BillingWatchExporterDown / BillingWatchStoreDown."""

    severity: Severity
    for_: Duration


@dataclass(frozen=True)
class RulesConfig:
    """Everything the rules and the dashboard draw from `config.yml`.

    - `selector`: label matchers for BillingWatch's scrape targets, e.g. 'job="billingwatch"',
      inserted into every query (use `matchers()` to build a selector with it).
    - `livemode`: "true", "false" or "" (both); added as a matcher to metrics with a livemode label.
    - `keep_labels`: labels kept when aggregating across replicas (besides a metric's own).
    - `runbook_url`: base URL; each alert links to `<runbook_url>/<AlertName>.md`.
    - `interval`: rule group evaluation interval.
    - One section per alert (see each class): `charge_failure_spike`, `fraud_spike`,
      `early_fraud_warnings`, `revenue_drop`, `mrr_drop`, `silent_lapse`, `webhook_lag`,
      `webhook_silence`, `refund_spike`, `anomaly`, `exporter_down`, `store_down`. Ratios are
      fractions (0.15 = 15%); durations are Prometheus duration strings (`seconds()` converts);
      `for_` is the YAML key `for`.
    """

    selector: str
    livemode: str
    keep_labels: list[str]
    runbook_url: str
    interval: Duration
    charge_failure_spike: ChargeFailureSpike
    fraud_spike: FraudSpike
    early_fraud_warnings: EarlyFraudWarnings
    revenue_drop: RevenueDrop
    mrr_drop: MrrDrop
    silent_lapse: SilentLapse
    webhook_lag: WebhookLag
    webhook_silence: WebhookSilence
    refund_spike: RefundSpike
    anomaly: Anomaly
    exporter_down: MetaAlert
    store_down: MetaAlert
    source: str = field(default="defaults", compare=False)  # the user's file, for messages

    def matchers(self, *extra: str, livemode: bool = True) -> str:
        """A `{...}` selector: the configured one, the livemode filter (for metrics that carry
        livemode) and `extra` matchers such as 'status="failed"'."""
        parts = [self.selector.strip().strip(",")] if self.selector.strip() else []
        if livemode and self.livemode:
            parts.append(f'livemode="{self.livemode}"')
        parts.extend(extra)
        return "{" + ",".join(parts) + "}"


T = TypeVar("T")


def _value(where: str, kind: Any, raw: Any) -> Any:
    if kind is Duration:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a duration such as 10m, got {raw!r}")
        if not raw or _DURATION.match(raw) is None:
            raise ConfigError(f"{where}: not a Prometheus duration: {raw!r}")
        return Duration(raw)
    if kind is Severity:
        if raw not in SEVERITIES:
            raise ConfigError(f"{where}: severity must be one of {', '.join(SEVERITIES)}, got {raw!r}")
        return Severity(raw)
    if kind is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
            raise ConfigError(f"{where}: expected a number >= 0, got {raw!r}")
        return float(raw)
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise ConfigError(f"{where}: expected a whole number >= 0, got {raw!r}")
        return raw
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        if not isinstance(raw, list):
            raise ConfigError(f"{where}: expected a list, got {raw!r}")
        return [_value(f"{where}[{i}]", item, v) for i, v in enumerate(raw)]
    if kind is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a string, got {raw!r}")
        return raw
    if isinstance(kind, type):
        return _build(where, kind, raw)
    raise TypeError(f"unsupported config type {kind!r}")  # pragma: no cover - a programming error


def _build(where: str, cls: type[T], raw: Any) -> T:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    known = {f.name.rstrip("_"): f for f in fields(cls) if f.init and f.name != "source"}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(known)}")
    missing = sorted(set(known) - set(raw))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    values = {f.name: _value(f"{where}.{key}" if where else key, f.type, raw[key]) for key, f in known.items()}
    return cls(**values)


def _merge(defaults: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def default_config_text() -> str:
    """The commented defaults (`config.yml`), as shipped in the package."""
    return resources.files(__package__).joinpath("config.yml").read_text()


def load_config(path: str | None = None) -> RulesConfig:
    """The defaults, with the keys of the YAML file at `path` laid over them.

    Raises billingwatch.config.ConfigError naming the key when the file is unreadable, has an
    unknown key or a malformed value.
    """
    raw = yaml.safe_load(default_config_text())
    source = "defaults"
    if path is not None:
        try:
            override = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if override is None:
            override = {}
        if not isinstance(override, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        raw = _merge(raw, override)
        source = path
    try:
        config = _build("", RulesConfig, raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if not config.selector.strip():
        # `up` and the meta-alerts would otherwise match every target Prometheus scrapes.
        raise ConfigError(f'{source}: selector must pick the BillingWatch targets, e.g. job="billingwatch"')
    if config.livemode not in ("", "true", "false"):
        raise ConfigError(f'{source}: livemode must be "true", "false" or "", got {config.livemode!r}')
    return replace(config, source=source)
