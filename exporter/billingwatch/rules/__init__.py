"""Prometheus rules rendered from one YAML config of thresholds (`billingwatch rules`)."""

from billingwatch.rules.config import RulesConfig, default_config_text, load_config, seconds
from billingwatch.rules.rulefile import render_rules

__all__ = ["RulesConfig", "default_config_text", "load_config", "render_rules", "seconds"]
