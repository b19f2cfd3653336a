"""How urgent a finding or an alert is, in the two vocabularies it is shown in.

BillingWatch grades with four levels. A detector declares its level with the names the store
keeps in its counter fields (`critical`, `high`, `medium`, `low`: renaming them would be a
layout change); the alerting config names it by priority (`P1`..`P4`). Everything Prometheus,
Alertmanager and people see carries both labels of the monitoring mixins' convention:
`severity` (`critical`, `warning`, `info`: what routing trees key on) and `priority` (our finer
level), with the fixed mapping below. `service="billingwatch"` tells our alerts apart in a
shared routing tree.
"""

from typing import Literal

Level = Literal["critical", "high", "medium", "low"]
LEVELS: tuple[Level, ...] = ("critical", "high", "medium", "low")
Priority = Literal["P1", "P2", "P3", "P4"]
PRIORITIES: tuple[Priority, ...] = ("P1", "P2", "P3", "P4")
AlertSeverity = Literal["critical", "warning", "info"]
ALERT_SEVERITIES: tuple[AlertSeverity, ...] = ("critical", "warning", "info")
SERVICE = "billingwatch"

PRIORITY_OF_LEVEL: dict[str, Priority] = dict(zip(LEVELS, PRIORITIES, strict=True))
LEVEL_OF_PRIORITY: dict[str, Level] = dict(zip(PRIORITIES, LEVELS, strict=True))
SEVERITY_OF_PRIORITY: dict[str, AlertSeverity] = {"P1": "critical", "P2": "warning", "P3": "warning", "P4": "info"}


def priority(level: str) -> str:
    """The priority of a stored level ("high" -> "P2"); an unknown level is shown as it is."""
    return PRIORITY_OF_LEVEL.get(level, level)


def alert_severity(level: str) -> str:
    """The mixins' severity of a stored level ("high" -> "warning"); an unknown level as it is."""
    return SEVERITY_OF_PRIORITY.get(priority(level), level)


def alert_labels(prio: str) -> dict[str, str]:
    """The routing labels every generated alert carries, for a priority ("P2")."""
    return {"severity": SEVERITY_OF_PRIORITY.get(prio, prio), "priority": prio, "service": SERVICE}


def shown(record: dict[str, object]) -> dict[str, object]:
    """An anomaly record as the pages, the API and CSV show it: `severity` in the mixins'
    vocabulary and `priority` beside it (the store keeps the level)."""
    level = str(record.get("severity", ""))
    return {**record, "severity": alert_severity(level), "priority": priority(level)}
