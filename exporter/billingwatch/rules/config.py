"""The alerting configuration: thresholds, windows and the target selector, read from YAML.

RulesConfig is built from the registry (rules/alerts/): the top-level keys below, then one
section per registered alert, each the dataclass its module declares with its defaults. The
commented defaults, `config.yml` beside this module (linked from `rules/config.yml` in the
repository), are generated from the same modules (`default_config_text`). A user's file only
holds what it changes; `load_config` lays it over the defaults and checks every key and value.
"""

from dataclasses import dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_origin

import yaml

from billingwatch.config import ConfigError
from billingwatch.levels import LEVELS, PRIORITIES, PRIORITY_OF_LEVEL, Priority
from billingwatch.rules.alerts import ALERTS, section
from billingwatch.rules.values import Duration, is_duration, knob, seconds

__all__ = ["Duration", "Priority", "RulesConfig", "Settings", "default_config_text", "load_config", "seconds"]


@dataclass(frozen=True)
class Settings:
    """The top-level keys of the config (the alerts' sections follow them in RulesConfig).

    - `selector`: label matchers for BillingWatch's scrape targets, e.g. 'job="billingwatch"',
      inserted into every query (use `matchers()` to build a selector with it).
    - `livemode`: "true", "false" or "" (both); added as a matcher to metrics with a livemode label.
    - `keep_labels`: labels kept when aggregating across replicas (besides a metric's own).
    - `runbook_url`: base URL; each alert links to `<runbook_url>/<AlertName>.md`.
    - `interval`: rule group evaluation interval.
    """

    selector: str = knob(
        'job="billingwatch"',
        """\
Label matchers that pick BillingWatch's scrape targets, inserted into every query. Change it
when your scrape job has another name or you run several deployments in one Prometheus
(e.g. 'job="billingwatch",namespace="payments"'). Only target labels belong here; to watch a
single mode use `livemode` below.""",
    )
    livemode: str = knob(
        "",
        """\
"true" to alert on live-mode figures only, "false" on test mode only, "" for both (every
alert keeps its livemode label, so you can also route test-mode alerts away in Alertmanager).""",
    )
    keep_labels: list[str] = field(
        default_factory=list,
        metadata={
            "comment": """\
Labels kept when figures are aggregated across replicas. Every replica exposes the same
store-backed (Redis) figures, so the rules take the max across replicas and keep only a
metric's own labels. The `account` label (BILLINGWATCH_ACCOUNTS_FILE) is always kept. Add a
label here when one Prometheus watches several BillingWatch deployments told apart by a target
label, e.g. [namespace]."""
        },
    )
    runbook_url: str = knob(
        "https://github.com/billingwatch/billingwatch/blob/main/docs/runbooks",
        """\
Where the runbooks live; each alert links to <runbook_url>/<AlertName>.md. Point it at your
own copy (a fork, a wiki) when you edit the runbooks.""",
    )
    interval: Duration = knob("1m", "How often Prometheus evaluates the BillingWatch rule groups.")

    def matchers(self, *extra: str, livemode: bool = True) -> str:
        """A `{...}` selector: the configured one, the livemode filter (for metrics that carry
        livemode) and `extra` matchers such as 'status="failed"'."""
        parts = [self.selector.strip().strip(",")] if self.selector.strip() else []
        if livemode and self.livemode:
            parts.append(f'livemode="{self.livemode}"')
        parts.extend(extra)
        return "{" + ",".join(parts) + "}"


_DOC = """Everything the rules and the dashboard draw from `config.yml`: the top-level keys of
Settings, then one section per registered alert (rules/alerts/<section>.py), an attribute named
after the section (`charge_failure_spike`, `fraud_spike`, ...) holding that module's dataclass.
Ratios are fractions (0.15 = 15%); durations are Prometheus duration strings (`seconds()`
converts); `for_` is the YAML key `for`. `source` is the user's file, for messages."""

if TYPE_CHECKING:  # what mypy sees; the sections come from the registry at run time

    @dataclass(frozen=True)
    class RulesConfig(Settings):
        source: str = "defaults"

        def __getattr__(self, section: str) -> Any: ...  # an alert's section, built at run time

else:
    RulesConfig = make_dataclass(
        "RulesConfig",
        [
            *((section(m), m.Config, field(default_factory=m.Config)) for m in ALERTS),
            ("source", str, field(default="defaults", compare=False)),
        ],
        bases=(Settings,),
        namespace={"__doc__": _DOC},
        frozen=True,
        kw_only=True,
    )
    RulesConfig.__module__ = __name__


HEADER = """\
# BillingWatch alerting configuration: the thresholds of the Prometheus rules and the Grafana
# dashboard, in one place (like node-mixin's config.libsonnet).
#
# This file holds the defaults. To change them, write a file with only the keys you change
# (anything left out keeps its default), then render your own rules:
#
#   billingwatch rules --config my.yml -o rules/billingwatch.rules.yml
#
# Durations are Prometheus durations (30s, 10m, 1h, 7d). Ratios are fractions (0.15 = 15%).
# Every section has a `priority` (P1, P2, P3 or P4) and a `for`: how long the condition must hold
# before the alert fires, so one scrape blip or one late evaluation does not page anyone. Each
# alert carries `priority` and the `severity` Alertmanager routes on (P1 critical, P2 and P3
# warning, P4 info), and service="billingwatch". (The former `severity: critical|high|medium|low`
# is still read, as P1|P2|P3|P4.)
#
# Generated from the alert modules (exporter/billingwatch/rules/alerts/) by
# `billingwatch rules --print-defaults`: change a default there, not here.
"""

BASELINES = """\
Baseline alerts (early_fraud_warnings, revenue_drop, mrr_drop, trial_conversion_drop) compare
with an average over `baseline` and stay quiet until that average is whole: Prometheus must
have scraped the metric `window` + `baseline` ago (8 days by default, 35 for trial conversion;
a new currency waits as long) and within the last hour, and at the start of the current
window. churn_spike likewise waits until the churn counter covers its window. A fresh install,
an outage of Prometheus longer than the window, or an exporter no longer scraped cannot fire
them from a half-filled window or average; a restart (a gap under an hour) keeps them armed."""


def _comment(text: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in text.splitlines())


def _scalar(value: Any) -> str:
    if isinstance(value, str) and (not value or '"' in value):  # quoted, so a reader sees the string
        return "'" + value.replace("'", "''") + "'" if value else '""'
    return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("\n...\n").strip()


def _section(name: str, defaults: Any) -> str:
    lines = [(f"  {f.name.rstrip('_')}: {_scalar(getattr(defaults, f.name))}", f.metadata.get("comment", ""))
             for f in fields(defaults)]
    width = max((len(line) for line, note in lines if note), default=0) + 2  # inline comments in one column
    body = "".join(f"{line.ljust(width)}# {note}\n" if note else line + "\n" for line, note in lines)
    return f"{name}:\n{body}"


def default_config_text() -> str:
    """The commented defaults (`config.yml`): generated from Settings and the alert modules."""
    defaults = Settings()
    top = [_comment(f.metadata["comment"]) + f"{f.name}: {_scalar(getattr(defaults, f.name))}\n"
           for f in fields(Settings)]
    alerts = [_comment(m.COMMENT) + _section(section(m), m.Config()) for m in ALERTS]
    return "\n".join([HEADER, *top, _comment(BASELINES), *alerts])


T = TypeVar("T")


def _value(where: str, kind: Any, raw: Any) -> Any:
    if kind is Duration:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a duration such as 10m, got {raw!r}")
        if not is_duration(raw):
            raise ConfigError(f"{where}: not a Prometheus duration: {raw!r}")
        return raw
    if kind is Priority:
        if raw not in PRIORITIES:
            raise ConfigError(f"{where}: priority must be one of {', '.join(PRIORITIES)}, got {raw!r}")
        return raw
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


def _legacy_severity(path: str, override: dict[str, Any]) -> dict[str, Any]:
    """A section's former `severity: critical|high|medium|low`, read as its `priority` P1..P4."""
    translated = dict(override)
    for name, section_ in override.items():
        if not isinstance(section_, dict) or "severity" not in section_:
            continue
        level = section_["severity"]
        if "priority" in section_:
            raise ConfigError(f"{path}: {name}: give priority only (severity is its former spelling)")
        if level not in LEVELS:
            raise ConfigError(f"{path}: {name}.severity: write priority: P1..P4 instead "
                              f"(severity critical, high, medium, low read as P1..P4), got {level!r}")
        translated[name] = {**{k: v for k, v in section_.items() if k != "severity"},
                            "priority": PRIORITY_OF_LEVEL[level]}
    return translated


def _merge(defaults: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line: what is wrong and where (its own text quotes the line below)."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(str(problem).split())[:200] + where


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
            raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
        except RecursionError:  # PyYAML composes nested nodes recursively
            raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
        if override is None:
            override = {}
        if not isinstance(override, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        raw = _merge(raw, _legacy_severity(path, override))
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
