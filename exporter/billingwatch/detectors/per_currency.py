"""A threshold per currency, in major units: "usd=1000,eur=1000,jpy=150000,*=1000".

One amount cannot fit every currency (1000 usd is 150000 jpy), so money thresholds are set per
currency; `*` is the fallback for any other currency, and without it other currencies are not
checked. It is a str (what /api/detectors shows), parsed and checked when built.
"""

import re

from billingwatch.config import ConfigError
from billingwatch.money import is_currency, minor_per_major

_MAX_MAJOR = 10**9


class PerCurrency(str):
    _amounts: dict[str, int]

    def __new__(cls, text: str, setting: str = "threshold") -> "PerCurrency":
        amounts: dict[str, int] = {}
        for part in text.split(","):
            code, _, raw = part.strip().lower().partition("=")
            code = code.strip()
            if not (is_currency(code) or code == "*") or not re.fullmatch(r"[0-9]{1,10}", raw.strip()):
                raise ConfigError(f"{setting} must read like usd=1000,eur=1000,*=1000 (amounts in major "
                                  f"units), got {part.strip()[:40]!r}")
            if code in amounts:
                raise ConfigError(f"{setting}: {code} is given twice")
            amount = int(raw)
            if not 1 <= amount <= _MAX_MAJOR:
                raise ConfigError(f"{setting}: {code} must be between 1 and {_MAX_MAJOR}")
            amounts[code] = amount
        self = super().__new__(cls, ",".join(f"{c}={a}" for c, a in amounts.items()))
        self._amounts = amounts
        return self

    def minor(self, currency: str) -> int | None:
        """The threshold for `currency` in its minor units; None when it is not checked."""
        major = self._amounts.get(currency, self._amounts.get("*"))
        return None if major is None else major * minor_per_major(currency)
