"""The stateful detectors: the built-in ones in REGISTRY, plus those installed packages register
in the `billingwatch.detectors` entry-point group (detectors/plugins.py, docs/detectors.md)."""

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from billingwatch.config import ConfigError, env_int
from billingwatch.detectors.base import (
    SEVERITIES,
    Context,
    Detector,
    Severity,
    check_detector_class,
    severities,
    threshold_maximum,
)
from billingwatch.detectors.currency_mismatch import CurrencyMismatch
from billingwatch.detectors.double_invoice import DoubleInvoice
from billingwatch.detectors.duplicate_charge import DuplicateCharge
from billingwatch.detectors.large_refund import LargeRefund
from billingwatch.detectors.negative_invoice import NegativeInvoice
from billingwatch.detectors.per_currency import PerCurrency
from billingwatch.detectors.plugins import load_plugins, one_line
from billingwatch.detectors.subscription_downgrade import SubscriptionDowngrade

REGISTRY: tuple[type[Any], ...] = (
    DuplicateCharge,
    NegativeInvoice,
    CurrencyMismatch,
    DoubleInvoice,
    SubscriptionDowngrade,
    LargeRefund,
)

__all__ = [
    "REGISTRY", "SEVERITIES", "Context", "Detector", "Severity", "build_detectors", "severities",
    "threshold_maximum", "thresholds",
]


def env_name(detector: type[Any], field_name: str) -> str:
    return f"BILLINGWATCH_DETECTOR_{detector.name}_{field_name}".upper()


def build_detectors(environ: Mapping[str, str] = os.environ) -> list[Detector]:
    """Instantiate every built-in and plugin detector with its thresholds from the environment.

    Each class is checked (check_detector_class), names are unique, and each threshold
    override is an integer in 1..maximum: any violation is a ConfigError naming it.
    """
    classes = [(cls, "built-in") for cls in REGISTRY] + load_plugins(environ)
    built: list[Detector] = []
    origins: dict[str, str] = {}
    settings: dict[str, str] = {}
    for cls, origin in classes:
        check_detector_class(cls, origin)
        if cls.name in origins:
            raise ConfigError(f"detector {cls.name}: the name is taken ({origins[cls.name]}; {origin})")
        origins[cls.name] = origin
        overrides: dict[str, int | PerCurrency] = {}
        for f in dataclasses.fields(cls):
            name = env_name(cls, f.name)
            if name in settings:  # detector a_b's field c and detector a's field b_c
                raise ConfigError(f"detector {cls.name}: setting {name} is also {settings[name]}'s")
            settings[name] = cls.name
            if environ.get(name, "") != "" and isinstance(f.default, PerCurrency):
                overrides[f.name] = PerCurrency(environ[name], name)
            elif environ.get(name, "") != "":
                overrides[f.name] = env_int(environ, name, 0, 1, threshold_maximum(f.name))
        try:
            built.append(cls(**overrides))
        except Exception as exc:  # a plugin's __post_init__ refusing its thresholds
            raise ConfigError(f"detector {cls.name} ({origin}): {one_line(exc)}") from None
    return built


def thresholds(detector: Detector) -> dict[str, Any]:
    return dataclasses.asdict(detector)  # type: ignore[call-overload, no-any-return]
