"""The registered stateful detectors. A custom detector is one module plus one line in REGISTRY."""

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from billingwatch.config import DAY, ConfigError, env_int
from billingwatch.detectors.base import SEVERITIES, Context, Detector, Severity, severities
from billingwatch.detectors.currency_mismatch import CurrencyMismatch
from billingwatch.detectors.double_invoice import DoubleInvoice
from billingwatch.detectors.duplicate_charge import DuplicateCharge
from billingwatch.detectors.large_refund import LargeRefund
from billingwatch.detectors.negative_invoice import NegativeInvoice
from billingwatch.detectors.per_currency import PerCurrency
from billingwatch.detectors.subscription_downgrade import SubscriptionDowngrade
from billingwatch.metrics.labels import EVENT_TYPES

REGISTRY: tuple[type[Any], ...] = (
    DuplicateCharge,
    NegativeInvoice,
    CurrencyMismatch,
    DoubleInvoice,
    SubscriptionDowngrade,
    LargeRefund,
)

__all__ = ["REGISTRY", "SEVERITIES", "Context", "Detector", "Severity", "build_detectors", "severities",
           "thresholds"]


def env_name(detector: type[Any], field_name: str) -> str:
    return f"BILLINGWATCH_DETECTOR_{detector.name}_{field_name}".upper()


def threshold_maximum(field_name: str) -> int:
    """Ten years in the field's unit: a window or memory longer than that is a typo, not a setting."""
    if field_name.endswith("_days"):
        return 3650
    if field_name.endswith("_seconds"):
        return 3650 * DAY
    if field_name.endswith("_percent"):
        return 100
    return 10**6


def build_detectors(environ: Mapping[str, str] = os.environ) -> list[Detector]:
    """Instantiate every registered detector with its thresholds from the environment (each 1..maximum)."""
    built: list[Detector] = []
    for cls in REGISTRY:
        if not {cls.severity, *severities(cls)} <= set(SEVERITIES):
            raise ConfigError(f"detector {cls.name}: severity must be one of {SEVERITIES}")
        if not cls.event_types <= EVENT_TYPES:
            # Else its events would be counted as type="other".
            raise ConfigError(f"detector {cls.name}: add {sorted(cls.event_types - EVENT_TYPES)} to the type "
                              "label's values (metrics/labels.py EVENT_TYPES)")
        overrides: dict[str, int | PerCurrency] = {}
        for f in dataclasses.fields(cls):
            name = env_name(cls, f.name)
            if environ.get(name, "") != "" and isinstance(f.default, PerCurrency):
                overrides[f.name] = PerCurrency(environ[name], name)
            elif environ.get(name, "") != "":
                overrides[f.name] = env_int(environ, name, 0, 1, threshold_maximum(f.name))
        built.append(cls(**overrides))
    return built


def thresholds(detector: Detector) -> dict[str, Any]:
    return dataclasses.asdict(detector)  # type: ignore[call-overload, no-any-return]
