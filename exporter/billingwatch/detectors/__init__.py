"""The registered stateful detectors. A custom detector is one module plus one line in REGISTRY."""

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from billingwatch.detectors.base import SEVERITIES, Context, Detector, Severity
from billingwatch.detectors.currency_mismatch import CurrencyMismatch
from billingwatch.detectors.double_invoice import DoubleInvoice
from billingwatch.detectors.duplicate_charge import DuplicateCharge
from billingwatch.detectors.negative_invoice import NegativeInvoice

REGISTRY: tuple[type[Any], ...] = (
    DuplicateCharge,
    NegativeInvoice,
    CurrencyMismatch,
    DoubleInvoice,
)

__all__ = ["REGISTRY", "SEVERITIES", "Context", "Detector", "Severity", "build_detectors", "thresholds"]


def env_name(detector: type[Any], field_name: str) -> str:
    return f"BILLINGWATCH_DETECTOR_{detector.name}_{field_name}".upper()


def build_detectors(environ: Mapping[str, str] = os.environ) -> list[Detector]:
    """Instantiate every registered detector with its thresholds from the environment."""
    built: list[Detector] = []
    for cls in REGISTRY:
        if cls.severity not in SEVERITIES:
            raise ValueError(f"detector {cls.name}: severity must be one of {SEVERITIES}")
        overrides: dict[str, int] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(env_name(cls, f.name))
            if raw is not None:
                try:
                    overrides[f.name] = int(raw)
                except ValueError:
                    raise ValueError(f"{env_name(cls, f.name)} must be an integer, got {raw!r}") from None
        built.append(cls(**overrides))
    return built


def thresholds(detector: Detector) -> dict[str, Any]:
    return dataclasses.asdict(detector)  # type: ignore[call-overload, no-any-return]
