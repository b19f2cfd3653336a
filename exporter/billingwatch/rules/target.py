"""What `billingwatch rules` adapts to the user's Prometheus: the scrape job the rules select
(`--job`) and the labels on the PrometheusRule object (`--label`, e.g. the `release` label
kube-prometheus-stack's ruleSelector matches)."""

import re
from dataclasses import replace

from billingwatch.config import ConfigError
from billingwatch.rules.config import RulesConfig

_JOB_MATCHER = re.compile(r'\bjob\s*=\s*"(?:[^"\\]|\\.)*"')
# Kubernetes label syntax: an optional DNS-subdomain prefix and '/', a name of at most 63
# characters; a value of at most 63 characters of the same alphabet (or empty).
_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_PREFIX = r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)"
_LABEL_KEY = re.compile(rf"({_PREFIX}/)?{_NAME}")
_LABEL_VALUE = re.compile(rf"{_NAME}?")


def with_job(config: RulesConfig, job: str) -> RulesConfig:
    """The config with its selector's `job` matcher set to `job` (added when it has none), so
    the rules select the user's scrape job."""
    if not job or any(c in job for c in '"\\\n') or not job.isprintable():
        raise ConfigError(f"--job: a scrape job name without quotes, backslashes or line breaks, got {job!r}")
    matcher = f'job="{job}"'
    selector = config.selector.strip().strip(",")
    if _JOB_MATCHER.search(selector):
        selector = _JOB_MATCHER.sub(lambda _: matcher, selector, count=1)
    else:
        selector = ",".join(part for part in (matcher, selector) if part)
    return replace(config, selector=selector)


def metadata_labels(pairs: list[str]) -> dict[str, str]:
    """`--label KEY=VALUE` arguments as a mapping, each checked against Kubernetes' label syntax."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--label: expected KEY=VALUE, got {pair!r}")
        prefix, _, name = key.rpartition("/")
        if not _LABEL_KEY.fullmatch(key) or len(prefix) > 253 or len(name) > 63:
            raise ConfigError(f"--label: {key!r} is not a Kubernetes label name (e.g. release, "
                              "app.kubernetes.io/part-of)")
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise ConfigError(f"--label {key}: {value!r} is not a Kubernetes label value (at most 63 letters, "
                              "digits, '-', '_' or '.', starting and ending with a letter or digit)")
        labels[key] = value
    return labels
