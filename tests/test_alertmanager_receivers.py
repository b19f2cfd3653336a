"""render.sh keeps only the channels that are configured (issue 26): email while an SMTP server is
set, Slack, Discord and the webhook while their secret or URL is; it says which, and never a URL.
Each rendered config passes amtool, and a real Alertmanager run on one notifies exactly the
channels it kept (its own per-integration counters, and what the local receivers got)."""

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from testkit.alerting import RENDER, TEMPLATES, render_env
from testkit.processes import binary, wait_until
from testkit.stack import alertmanager, http_sink, smtp_sink
from tests.conftest import ROOT

CONFIG = ROOT / "alertmanager" / "alertmanager.yml"
CHANNELS = {"email": "email_configs", "slack": "slack_configs", "discord": "discord_configs",
            "webhook": "webhook_configs"}
SECRET_URLS = {"webhook_url": "https://hooks.example.test/billing/s3cret-webhook",
               "discord_webhook_url": "https://discord.example.test/api/webhooks/1/s3cret-discord",
               "slack_api_url": "https://hooks.slack.example.test/services/s3cret-slack"}


def run_render(directory: Path, files: dict[str, str], **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """render.sh with these secret files in `directory` and this environment."""
    for name, content in files.items():
        (directory / name).write_text(content + "\n")
    rendered = directory / "rendered.yml"
    result = subprocess.run(["sh", str(RENDER)], env=render_env(directory, rendered, **env),
                            capture_output=True, text=True, timeout=30)
    return result, rendered


def channels_of(config: dict[str, Any]) -> dict[str, set[str]]:
    return {r["name"]: {name for name, key in CHANNELS.items() if r.get(key)} for r in config["receivers"]}


@pytest.mark.parametrize(
    ("files", "env", "printed", "kept"),
    [
        # Nothing configured: no channel at all, and it says so.
        ({}, {"SMTP_SMARTHOST": ""}, "none: alerts reach no one (docs/alert-delivery.md)", set()),
        # Compose's default: the bundled mail catcher only.
        ({}, {"SMTP_SMARTHOST": "mailpit:1025"}, "email(mailpit)", {"email"}),
        # A host install: the config's own SMTP server.
        ({}, {}, "email(localhost)", {"email"}),
        ({"webhook_url": SECRET_URLS["webhook_url"]}, {"SMTP_SMARTHOST": "mailpit:1025"},
         "email(mailpit) webhook", {"email", "webhook"}),
        ({"slack_api_url": SECRET_URLS["slack_api_url"]}, {"SMTP_SMARTHOST": "",
                                                           "BILLINGWATCH_DISCORD_WEBHOOK_URL":
                                                           SECRET_URLS["discord_webhook_url"]},
         "slack discord", {"slack", "discord"}),
        (SECRET_URLS, {"SMTP_SMARTHOST": "smtp.example.test:587", "SMTP_REQUIRE_TLS": "true"},
         "email(smtp.example.test) slack discord webhook", set(CHANNELS)),
    ],
    ids=["none", "mailpit", "host-smtp", "mailpit+webhook", "slack+discord", "all"],
)
def test_render_keeps_exactly_the_configured_channels(tmp_path: Path, files: dict[str, str], env: dict[str, str],
                                                       printed: str, kept: set[str]) -> None:
    result, rendered = run_render(tmp_path, files, **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"render.sh: receivers enabled: {printed}\n"
    for url in SECRET_URLS.values():
        assert url not in result.stdout + result.stderr
    config = yaml.safe_load(rendered.read_text())
    # Every receiver keeps the configured channels it routes to, and only those.
    shipped = channels_of(yaml.safe_load(CONFIG.read_text()))
    assert channels_of(config) == {name: channels & kept for name, channels in shipped.items()}
    if "email" in kept and "SMTP_SMARTHOST" in env:
        assert config["global"]["smtp_smarthost"] == env["SMTP_SMARTHOST"]
    checked = subprocess.run([binary("amtool"), "check-config", str(rendered)], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_missing_or_empty_secret_file_is_not_configured(tmp_path: Path) -> None:
    """An empty Slack file, an empty URL variable: the channel stays out rather than failing later."""
    (tmp_path / "slack_api_url").write_text("")
    result, rendered = run_render(tmp_path, {}, SMTP_SMARTHOST="", BILLINGWATCH_WEBHOOK_URL="")
    assert result.returncode == 0 and "receivers enabled: none" in result.stderr
    assert channels_of(yaml.safe_load(rendered.read_text())) == {"page": set(), "notify": set(), "digest": set()}


def test_render_refuses_a_smtp_require_tls_that_is_not_a_boolean(tmp_path: Path) -> None:
    result, _ = run_render(tmp_path, {}, SMTP_REQUIRE_TLS="yes")
    assert result.returncode == 1 and "SMTP_REQUIRE_TLS must be true or false" in result.stderr


def notifications(url: str) -> dict[tuple[str, str], float]:
    """Alertmanager's own counters: (metric, integration) -> notifications, summed over receivers."""
    counts: dict[tuple[str, str], float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        found = re.match(r'alertmanager_notifications(_failed)?_total\{.*integration="(\w+)".*\} (\S+)$', line)
        if found:
            key = ("failed" if found[1] else "sent", found[2])
            counts[key] = counts.get(key, 0.0) + float(found[3])
    return counts


def local(rendered: Path) -> Path:
    """The rendered config with this checkout's templates and waits of a second."""
    config = yaml.safe_load(rendered.read_text())
    config["templates"] = [str(TEMPLATES / "*.tmpl")]
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    path = rendered.with_name("local.yml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fire(url: str, severity: str, priority: str) -> None:
    labels = {"alertname": "BillingAnomalyDetected", "detector": "duplicate_charge", "service": "billingwatch",
              "severity": severity, "priority": priority, "livemode": "true"}
    alert = {"labels": labels,
             "annotations": {"summary": "duplicate_charge: billing anomaly detected"},
             "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    httpx.post(url + "/api/v2/alerts", json=[alert], timeout=10).raise_for_status()


@pytest.mark.parametrize("kept", [{"email", "webhook"}, {"slack", "discord"}], ids=lambda k: "+".join(sorted(k)))
def test_a_real_alertmanager_notifies_exactly_the_enabled_channels(tmp_path: Path, kept: set[str]) -> None:
    with smtp_sink() as smtp, http_sink() as http:
        files = {"webhook_url": http.url + "/webhook", "slack_api_url": http.url + "/slack",
                 "discord_webhook_url": http.url + "/discord"}
        configured = {name: url for name, url in files.items() if name.split("_")[0] in kept}
        env = {"SMTP_SMARTHOST": f"127.0.0.1:{smtp.port}" if "email" in kept else "", "SMTP_REQUIRE_TLS": "false"}
        result, rendered = run_render(tmp_path, configured, **env)
        assert result.returncode == 0, result.stderr
        with alertmanager(tmp_path / "am", local(rendered)) as am:
            fire(am.url, "critical", "P1")
            if "email" in kept:
                smtp.wait_for(lambda m: "duplicate_charge" in str(m["Subject"]), timeout=45)
            for channel in kept - {"email"}:
                http.wait_for("/" + channel, lambda body: "duplicate_charge" in str(body), timeout=45)
            wait_until(lambda: all(notifications(am.url).get(("sent", c), 0) >= 1 for c in kept),
                       timeout=30, what="Alertmanager's counters")
            counts = notifications(am.url)
        for channel in CHANNELS:
            assert (counts.get(("sent", channel), 0) >= 1) == (channel in kept), (channel, counts)
            assert counts.get(("failed", channel), 0) == 0, (channel, counts)
        if "email" not in kept:
            assert smtp.received() == []
        for channel in {"slack", "discord", "webhook"} - kept:
            assert http.received("/" + channel) == []
        if "email" in kept:
            subject = str(smtp.received()[0]["Subject"])
            assert subject.startswith("[FIRING:1] CRITICAL P1 BillingAnomalyDetected"), subject


def test_a_block_of_your_own_marked_with_its_channel_follows_the_same_rule(tmp_path: Path) -> None:
    """docs/alert-delivery.md: a block whose first line ends with `# channel: NAME` is kept or left
    out with that channel, whether its list is indented under the key or not."""
    own = tmp_path / "own.yml"
    own.write_text("""global:
  smtp_smarthost: ''
route:
  receiver: team
receivers:
  - name: team
    email_configs:  # channel: email
    - to: team@example.test
    webhook_configs:  # channel: webhook
      - url: 'http://billingwatch-webhook-url-not-set.invalid/'
        send_resolved: false
  - name: quiet
""")
    result, rendered = run_render(tmp_path, {}, ALERTMANAGER_CONFIG=str(own),
                                  BILLINGWATCH_WEBHOOK_URL="https://hooks.example.test/team")
    assert result.returncode == 0 and result.stderr == "render.sh: receivers enabled: webhook\n"
    config = yaml.safe_load(rendered.read_text())
    assert config["receivers"] == [
        {"name": "team", "webhook_configs": [{"url": "https://hooks.example.test/team", "send_resolved": False}]},
        {"name": "quiet"}]
    checked = subprocess.run([binary("amtool"), "check-config", str(rendered)], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_config_that_cannot_be_read_stops_render_and_leaves_nothing(tmp_path: Path) -> None:
    """No half-rendered config for Alertmanager to start on, and no file holding a URL left behind."""
    result, rendered = run_render(tmp_path, {"webhook_url": SECRET_URLS["webhook_url"]},
                                  ALERTMANAGER_CONFIG=str(tmp_path / "missing.yml"))
    assert result.returncode != 0 and "missing.yml" in result.stderr
    assert not rendered.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["webhook_url"]
