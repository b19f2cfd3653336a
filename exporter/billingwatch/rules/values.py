"""The value types of the alerting config, shared by config.py and the alert modules (which
config.py imports, so they cannot import it back)."""

import re
from dataclasses import field
from typing import Annotated, TypeVar

from billingwatch.config import ConfigError

# A Prometheus duration: "30s", "10m", "1h30m", "7d" (config.py checks it by this marker).
Duration = Annotated[str, "Prometheus duration"]

_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
_UNIT_SECONDS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)

T = TypeVar("T")


def is_duration(text: str) -> bool:
    return bool(text) and _DURATION.match(text) is not None


def seconds(duration: str) -> float:
    """A Prometheus duration in seconds: seconds("1h30m") == 5400."""
    match = _DURATION.match(duration)
    if not duration or match is None:
        raise ConfigError(f"not a Prometheus duration: {duration!r}")
    return sum(int(match.group(2 * i + 2) or 0) * unit for i, unit in enumerate(_UNIT_SECONDS))


def knob(default: T, comment: str) -> T:
    """A config field with its default and the comment config.yml prints with it (after the
    value in an alert's section, above the key at the top level)."""
    return field(default=default, metadata={"comment": comment})
