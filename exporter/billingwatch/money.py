"""Money: Stripe amounts are integers in the currency's smallest unit; metrics are in major units."""

import re

# Stripe's zero-decimal currencies: the amount is already in major units.
# https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
# Three-decimal currencies: the amount is in thousandths.
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

_CURRENCY = re.compile(r"^[a-z]{3}$")

# Seconds in an average month, and months per recurring interval unit, for MRR.
_MONTHS_PER_UNIT = {"day": 12 / 365, "week": 12 / 52, "month": 1.0, "year": 12.0}


def is_currency(code: object) -> bool:
    """True for a lower-case ISO 4217 code as Stripe sends it."""
    return isinstance(code, str) and _CURRENCY.match(code) is not None


def minor_per_major(currency: str) -> int:
    if currency in ZERO_DECIMAL:
        return 1
    if currency in THREE_DECIMAL:
        return 1000
    return 100


def to_major(minor_amount: float, currency: str) -> float:
    """Convert a Stripe amount in minor units to major units (cents to dollars)."""
    return minor_amount / minor_per_major(currency)


def monthly_amount(unit_amount: int, quantity: int, interval: str, interval_count: int) -> float:
    """Normalise a recurring price to one month, in minor units (a yearly 120.00 is 10.00 a month)."""
    months = _MONTHS_PER_UNIT.get(interval)
    if months is None or interval_count <= 0:
        return 0.0
    return unit_amount * quantity / (months * interval_count)
