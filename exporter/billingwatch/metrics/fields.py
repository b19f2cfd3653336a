"""How a store-held series is named in the store: "<family key>|<label value>|<label value>...".

Label values never contain "|" (they come from small, validated sets), so a field splits back
into its family and labels (parse). The plan (recording/plan.py) names the fields it moves; the
store only adds to them.
"""

from billingwatch.metrics.families import ANOMALIES, ANOMALY_FEEDBACK, HISTORY_ANOMALIES, REDIS_FAMILIES, Family
from billingwatch.metrics.labels import livemode_label

BY_KEY = {family.key: family for family in REDIS_FAMILIES}


def field(family: Family, *values: str) -> str:
    return "|".join((family.key, *values))


def anomaly_field(detector: str, severity: str, livemode: bool, history: bool) -> str:
    """The counter an anomaly moves: found in imported history, it is not live traffic."""
    return field(HISTORY_ANOMALIES if history else ANOMALIES, detector, severity, livemode_label(livemode))


def feedback_field(detector: str, verdict: str) -> str:
    """The counter a verdict on one of `detector`'s anomalies moves."""
    return field(ANOMALY_FEEDBACK, detector, verdict)


def parse(name: str) -> tuple[Family, list[str]] | None:
    """The family and label values of a store field; None for a field no family owns."""
    key, *values = name.split("|")
    family = BY_KEY.get(key)
    if family is None or len(values) != len(family.labels):
        return None
    return family, values
