"""Money: Stripe amounts are integers in the currency's smallest unit; metrics are in major units."""

# Stripe's zero-decimal currencies: the amount is already in major units.
# https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
# Three-decimal currencies: the amount is in thousandths.
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

# The ISO 4217 codes Stripe accepts as presentment currencies, lower case as the API sends them:
# https://docs.stripe.com/currencies#presentment-currencies (plus codes Stripe supported before a
# currency was redenominated, e.g. hrk, sll, mro, vef, so events of older charges still parse).
# Currency is a label value, so anything else is rejected rather than becoming a new series.
CURRENCIES = frozenset(
    """
    aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn bzd
    cad cdf chf clp cny cop crc cve czk djf dkk dop dzd eek egp etb eur fjd fkp gbp gel ghs gip gmd
    gnf gtq gyd hkd hnl hrk htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak
    lbp lkr lrd lsl ltl lvl mad mdl mga mkd mmk mnt mop mro mru mur mvr mwk mxn myr mzn nad ngn nio
    nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sll
    sos srd std stn svc szl thb tjs tnd top try ttd twd tzs uah ugx usd uyu uzs vef ves vnd vuv wst
    xaf xcd xcg xof xpf yer zar zmw
    """.split()
)

# Seconds in an average month, and months per recurring interval unit, for MRR.
_MONTHS_PER_UNIT = {"day": 12 / 365, "week": 12 / 52, "month": 1.0, "year": 12.0}


def is_currency(code: object) -> bool:
    """True for a lower-case ISO 4217 code Stripe supports, exactly as the API sends it."""
    return isinstance(code, str) and code in CURRENCIES


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


def amount_text(amount: int, currency: str | None) -> str:
    """A Stripe amount in minor units as a person reads it: 1999 usd → "19.99 USD", 500 jpy → "500 JPY"."""
    if not currency or not is_currency(currency):
        return f"{amount} (minor units{', ' + str(currency) if currency else ''})"
    per = minor_per_major(currency)
    decimals = {1: 0, 100: 2, 1000: 3}[per]
    sign = "-" if amount < 0 else ""
    whole, part = divmod(abs(amount), per)
    major = f"{whole:,}" + (f".{part:0{decimals}d}" if decimals else "")
    return f"{sign}{major} {currency.upper()}"
