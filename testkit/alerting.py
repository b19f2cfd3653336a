"""The alerting stack's configuration for end-to-end runs: the repo's Alertmanager config rendered
by alertmanager/render.sh with receivers on local sinks, an SMTP sink that wants a login, fast rules,
and predicates on what a receiver gets. Shared by tests/ and bench/notify.py."""

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from testkit import ROOT
from testkit.processes import free_port
from testkit.stack import HttpSink, SmtpSink

TEMPLATES = ROOT / "alertmanager" / "templates"
RENDER = ROOT / "alertmanager" / "render.sh"
SMTP_USER, SMTP_PASSWORD = "billingwatch", "smtp-password-from-a-file"
# The anomaly alert stays active for this long after the last anomaly: short, so it resolves
# within the test and a (wrongly) recounted redelivery would fire it again.
ANOMALY_WINDOW = "8s"
RULES_OVERRIDE = {
    "interval": "1s",
    "anomaly": {"window": ANOMALY_WINDOW},
    "charge_failure_spike": {"window": "20s", "min_charges": 5, "for": "0s"},
    # The money signals, as `simulate --inject` trips them at the default thresholds.
    "payout_failed": {"window": "30s"},
    "dispute_loss_rate": {"window": "30s", "for": "0s"},
    "authentication_failure_spike": {"window": "5s", "baseline": "30s", "for": "0s"},
    "review_backlog": {"for": "0s"},
}
# authentication_failure_spike stays quiet until its baseline is whole: window + baseline.
SIGNALS_WARM_UP = "35s"


# billingwatch/levels.py: every BillingWatch alert carries service="billingwatch", a severity Alertmanager
# routes on (critical, warning, info) and BillingWatch's finer priority (P1..P4).
PRIORITY_OF_LEVEL = {"critical": "P1", "high": "P2", "medium": "P3", "low": "P4"}
SEVERITY_OF_PRIORITY = {"P1": "critical", "P2": "warning", "P3": "warning", "P4": "info"}


def convention(labels: dict[str, str]) -> dict[str, str]:
    """`labels` as billingwatch/levels.py has every BillingWatch alert carry them: a level of the older
    scale (critical, high, medium, low, as in the rules config) or a priority given as the
    severity becomes that priority and its severity; labels already in the convention are kept."""
    level = labels.get("severity", "")
    priority = PRIORITY_OF_LEVEL.get(level, level)  # a level, or already a priority
    if priority in SEVERITY_OF_PRIORITY and "priority" not in labels:
        labels = {**labels, "priority": priority, "severity": SEVERITY_OF_PRIORITY[priority]}
    return {**labels, "service": "billingwatch"}


def render_env(directory: Path, rendered: Path, **env: str) -> dict[str, str]:
    """The environment render.sh runs with: secrets looked up in `directory` (only the files
    there count), none of this machine's own settings, plus `env`."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("BILLINGWATCH_", "SMTP_", "ALERTMANAGER_"))}
    return {**clean, "ALERTMANAGER_RENDERED": str(rendered),
            "BILLINGWATCH_WEBHOOK_URL_FILE": str(directory / "webhook_url"),
            "BILLINGWATCH_DISCORD_WEBHOOK_URL_FILE": str(directory / "discord_webhook_url"),
            "BILLINGWATCH_SLACK_API_URL_FILE": str(directory / "slack_api_url"), **env}


def render(directory: Path, webhook_url: str, discord_url: str | None = None) -> Path:
    """alertmanager/render.sh as a user runs it, with the URLs in secret files: the webhook, Discord
    when given a URL, Slack when `directory` has a slack_api_url file, email to the config's server."""
    (directory / "webhook_url").write_text(webhook_url + "\n")
    if discord_url is not None:
        (directory / "discord_webhook_url").write_text(discord_url + "\n")
    rendered = directory / "alertmanager.yml"
    subprocess.run(["sh", str(RENDER)], env=render_env(directory, rendered), check=True, capture_output=True,
                   timeout=30)
    return rendered


def local_config(directory: Path, webhook_url: str, templates: list[str] | None = None,
                 discord_url: str | None = None) -> dict[str, Any]:
    """The rendered config with the templates read from this checkout instead of /etc/alertmanager."""
    config: dict[str, Any] = yaml.safe_load(render(directory, webhook_url, discord_url).read_text())
    config["templates"] = templates or [str(TEMPLATES / "*.tmpl")]
    return config


def write(directory: Path, config: dict[str, Any]) -> Path:
    path = directory / "alertmanager.local.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def authenticating_smtp_sink() -> Iterator[SmtpSink]:
    """testkit.stack's SMTP sink, but refusing mail until the client logs in with SMTP_PASSWORD."""
    sink = SmtpSink(free_port())

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USER.encode(), SMTP_PASSWORD.encode())
        return AuthResult(success=ok)

    # Loopback needs no TLS; LOGIN is left out because aiosmtpd's challenge ("User Name") is not
    # the "Username:" Alertmanager expects, so Alertmanager uses PLAIN.
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port, authenticator=authenticator,
                            auth_required=True, auth_require_tls=False, auth_exclude_mechanism=["LOGIN"])
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def alertmanager_config(directory: Path, smtp: SmtpSink, http: HttpSink, exporter_url: str) -> Path:
    """The repo's config through render.sh, secrets in files, receivers on the sinks, short waits."""
    secrets = directory / "secrets"
    secrets.mkdir(parents=True)
    # Alertmanager 0.25 sends the password file's bytes as they are: no trailing newline.
    (secrets / "smtp_password").write_text(SMTP_PASSWORD)
    (secrets / "slack_api_url").write_text(http.url + "/slack\n")
    settings = (TEMPLATES / "settings.tmpl").read_text()
    assert "http://localhost:9786" in settings
    (directory / "settings.tmpl").write_text(settings.replace("http://localhost:9786", exporter_url))
    config = local_config(secrets, http.url + "/webhook",
                          [str(TEMPLATES / "billingwatch.tmpl"), str(directory / "settings.tmpl")])
    config["global"].update(smtp_smarthost=f"127.0.0.1:{smtp.port}", smtp_require_tls=False,
                            smtp_auth_password_file=str(secrets / "smtp_password"),
                            slack_api_url_file=str(secrets / "slack_api_url"))
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    return write(directory, config)


def firing(detector: str) -> Callable[[Any], bool]:
    """A webhook body (Alertmanager's JSON) announcing `detector` firing."""
    return lambda body: isinstance(body, dict) and body.get("status") == "firing" and any(
        a["status"] == "firing" and a["labels"].get("detector") == detector for a in body["alerts"])


def resolved(detector: str) -> Callable[[Any], bool]:
    return lambda body: isinstance(body, dict) and body.get("status") == "resolved" and any(
        a["labels"].get("detector") == detector for a in body["alerts"])
