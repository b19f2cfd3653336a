"""alertmanager/: the committed config passes amtool, routes each severity (critical, warning,
info: billingwatch/levels.py) to the right receiver, inhibits the consequences of one root cause (on a real
Alertmanager), keeps secrets out, and render.sh puts the webhook URL in without mangling it.
Which channels render.sh keeps: tests/test_alertmanager_receivers.py."""

import json
import re
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from billingwatch.detectors import REGISTRY
from billingwatch.notify.alertmanager import ALERTNAME as PUSHED
from testkit.alerting import RENDER, TEMPLATES, convention, local_config, render, render_env, write
from testkit.processes import binary, wait_until
from testkit.stack import alertmanager
from tests.conftest import ROOT

CONFIG = ROOT / "alertmanager" / "alertmanager.yml"
SNIPPET = ROOT / "alertmanager" / "billingwatch-route.yml"
RULES = ROOT / "rules" / "billingwatch.rules.yml"
PLACEHOLDER = "http://billingwatch-webhook-url-not-set.invalid/"
DISCORD_PLACEHOLDER = "http://billingwatch-discord-webhook-url-not-set.invalid/"
RECEIVER_FOR = {"critical": "page", "warning": "notify", "info": "digest"}
BW = {"service": "billingwatch"}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("amtool"), *args], capture_output=True, text=True, timeout=60)


def committed_alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_committed_config_passes_amtool() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_templates_parse(tmp_path: Path) -> None:
    """check-config parses the templates only where they are: point it at this checkout."""
    path = write(tmp_path, local_config(tmp_path, "https://hooks.example.com/x"))
    result = amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.tmpl").write_text((TEMPLATES / "billingwatch.tmpl").read_text() + "{{ define }}")
    bad = write(broken, local_config(broken, "https://hooks.example.com/x", [str(broken / "*.tmpl")]))
    assert amtool("check-config", str(bad)).returncode != 0


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({**BW, "alertname": "BillingAnomalyDetected", "detector": "duplicate_charge", "severity": "critical",
          "priority": "P1"}, "page"),
        ({**BW, "alertname": "BillingFraudSpike", "detector": "fraud_spike", "severity": "critical",
          "priority": "P1"}, "page"),
        ({**BW, "alertname": "BillingChargeFailureSpike", "detector": "charge_failure_spike", "severity": "warning",
          "priority": "P2"}, "notify"),
        ({**BW, "alertname": "BillingAnomalyDetected", "detector": "negative_invoice", "severity": "warning",
          "priority": "P3"}, "notify"),
        ({**BW, "alertname": "BillingWebhookLag", "detector": "webhook_lag", "severity": "info", "priority": "P4"},
         "digest"),
        ({**BW, "alertname": "BillingWatchStoreDown", "detector": "store_down", "severity": "warning",
          "priority": "P2"}, "notify"),
        # The alerts the exporter pushes: routed by severity like the rules' alerts.
        ({**BW, "alertname": "BillingAnomaly", "detector": "duplicate_charge", "severity": "critical",
          "priority": "P1", "livemode": "true", "event_id": "evt_1"}, "page"),
        ({**BW, "alertname": "BillingAnomaly", "detector": "negative_invoice", "severity": "warning",
          "priority": "P3", "livemode": "false", "event_id": "evt_2"}, "notify"),
        # Routing is on severity alone: the priority never overrides it.
        ({**BW, "alertname": "MyBillingRule", "severity": "info", "priority": "P1"}, "digest"),
        # A custom rule with no or an unknown severity is still delivered.
        ({"alertname": "MyBillingRule"}, "notify"),
        ({"alertname": "MyBillingRule", "severity": "high"}, "notify"),
    ],
)
def test_route(labels: dict[str, str], receiver: str) -> None:
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={receiver}",
                    *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shipped_alert_and_detector_reaches_its_receiver() -> None:
    """Each alert of the committed rules and each registered detector, by its severity (in the
    convention of billingwatch/levels.py, translated from a detector's level)."""
    cases = [
        convention({"alertname": a["alert"], **a["labels"]})
        for a in committed_alerts() if "severity" in a.get("labels", {})
    ]
    cases += [convention({"alertname": name, "detector": d.name, "severity": d.severity})
              for d in REGISTRY for name in ("BillingAnomalyDetected", PUSHED)]
    assert len(cases) > len(REGISTRY)
    for labels in cases:
        expected = RECEIVER_FOR[labels["severity"]]
        result = amtool("config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={expected}",
                        *(f"{k}={v}" for k, v in labels.items()))
        assert result.returncode == 0, f"{labels}: {result.stdout}"


def test_inhibit_rules_name_alerts_the_rules_ship() -> None:
    """A renamed alert would silently disable an inhibition: every name must exist (the rules'
    alerts and the one the exporter pushes)."""
    shipped = {a["alert"] for a in committed_alerts()} | {PUSHED}
    config = yaml.safe_load(CONFIG.read_text())
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            name, op, value = re.fullmatch(r'(\w+)\s*(=~|!~|!=|=)\s*"(.*)"', matcher).groups()  # type: ignore[union-attr]
            if name == "alertname" and op in ("=", "!="):
                assert value in shipped, matcher
            if name == "alertname" and op in ("=~", "!~"):
                assert any(re.fullmatch(value, s) for s in shipped), matcher


@pytest.mark.parametrize("path", [CONFIG, SNIPPET], ids=lambda p: p.name)
def test_no_secret_in_the_committed_config(path: Path) -> None:
    config = yaml.safe_load(path.read_text())

    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        return {k for v in node for k in keys(v)} if isinstance(node, list) else set()

    inline = {"smtp_auth_password", "smtp_auth_secret", "auth_password", "auth_secret", "slack_api_url", "api_url",
              "credentials", "password", "bearer_token"}
    assert not keys(config) & inline
    if path == CONFIG:
        assert config["global"]["smtp_auth_password_file"].startswith("/etc/alertmanager/secrets/")
        assert config["global"]["slack_api_url_file"].startswith("/etc/alertmanager/secrets/")
    slack = {s["api_url_file"] for r in config["receivers"] for s in r.get("slack_configs", []) if "api_url_file" in s}
    assert slack <= {"/etc/alertmanager/secrets/slack_api_url"} and (path == CONFIG or slack)
    urls = {w["url"] for r in config["receivers"] for w in r.get("webhook_configs", [])}
    assert urls == {PLACEHOLDER}
    discord = {d["webhook_url"] for r in config["receivers"] for d in r.get("discord_configs", [])}
    assert discord == {DISCORD_PLACEHOLDER}


def test_render_fills_in_the_webhook_url_and_keeps_it_private(tmp_path: Path) -> None:
    url = "https://hooks.example.com/services/T0/B0/x?a=1&b=|\\'#z"
    discord_url = "https://discord.com/api/webhooks/123/tok&en|\\'x"
    (tmp_path / "slack_api_url").write_text("https://hooks.slack.example/x\n")
    rendered = render(tmp_path, url, discord_url)
    config = yaml.safe_load(rendered.read_text())
    urls = [w["url"] for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert urls and set(urls) == {url}
    discord = [d["webhook_url"] for r in config["receivers"] for d in r.get("discord_configs", [])]
    assert discord and set(discord) == {discord_url}
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    # Every channel configured: everything else is the committed config, untouched (Slack's
    # URL file where this site keeps it).
    committed = yaml.safe_load(CONFIG.read_text())
    committed["global"]["slack_api_url_file"] = str(tmp_path / "slack_api_url")
    for receiver in committed["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = url
        for channel in receiver.get("discord_configs", []):
            channel["webhook_url"] = discord_url
    assert config == committed
    assert amtool("check-config", str(rendered)).returncode == 0
    assert "https://hooks.slack.example/x" not in rendered.read_text()  # Alertmanager reads the file


def test_render_without_a_url_leaves_the_channel_out_and_never_prints_a_url(tmp_path: Path) -> None:
    env = render_env(tmp_path, tmp_path / "out.yml")
    result = subprocess.run(["sh", str(RENDER)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "render.sh: receivers enabled: email(localhost)\n"
    assert result.stdout == f"{tmp_path / 'out.yml'}\n"
    config = yaml.safe_load((tmp_path / "out.yml").read_text())
    assert [sorted(k for k in r if k.endswith("_configs")) for r in config["receivers"]] == [["email_configs"]] * 3
    env["BILLINGWATCH_WEBHOOK_URL"] = "https://secret.example.com/token123"
    result = subprocess.run(["sh", str(RENDER), "sh", "-c", 'cat "${0#--config.file=}"'],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "url: 'https://secret.example.com/token123'" in result.stdout  # exec'd with --config.file
    assert result.stderr == "render.sh: receivers enabled: email(localhost) webhook\n"
    env["BILLINGWATCH_WEBHOOK_URL"] = "ftp://nope"
    assert subprocess.run(["sh", str(RENDER)], env=env, capture_output=True, timeout=30).returncode == 1
    env["BILLINGWATCH_WEBHOOK_URL"] = "https://secret.example.com/token123"
    env["BILLINGWATCH_DISCORD_WEBHOOK_URL"] = "discord.com/api/webhooks/1/secret456"
    result = subprocess.run(["sh", str(RENDER)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "Discord webhook URL must start with" in result.stderr
    assert "secret456" not in result.stderr


def test_discord_goes_where_slack_goes() -> None:
    """Discord is a second chat channel: the receivers that post to Slack post to Discord, with
    the same template content (title, then per alert summary, detector, value, links)."""
    config = yaml.safe_load(CONFIG.read_text())
    slack = {r["name"] for r in config["receivers"] if r.get("slack_configs")}
    discord = {r["name"] for r in config["receivers"] if r.get("discord_configs")}
    assert slack == discord == {"page", "notify"}
    for receiver in config["receivers"]:
        for channel in receiver.get("discord_configs", []):
            assert channel["send_resolved"] is True
            assert channel["title"] == '{{ template "billingwatch.discord.title" . }}'
            assert channel["message"] == '{{ template "billingwatch.discord.message" . }}'


def test_digest_title_names_every_finding(tmp_path: Path) -> None:
    """The info digest groups by severity only: its title has no single alert name."""
    labels = {"severity": "info", "priority": "P4", "service": "billingwatch"}
    alerts = [{"status": "firing", "labels": {"alertname": n, "detector": d, **labels},
               "annotations": {"summary": s}, "startsAt": "2025-01-01T00:00:00Z"}
              for n, d, s in [("BillingWebhookLag", "webhook_lag", "p95 lag 12m"), ("MyRule", "mine", "x")]]
    data = {"receiver": "digest", "status": "firing", "alerts": alerts, "groupLabels": {"severity": "info"},
            "commonLabels": {"severity": "info", "priority": "P4"}, "commonAnnotations": {}, "externalURL": "http://am"}
    (tmp_path / "data.json").write_text(json.dumps(data))
    result = amtool("template", "render", f"--template.glob={TEMPLATES}/*.tmpl",
                    f"--template.data={tmp_path / 'data.json'}",
                    '--template.text={{ template "billingwatch.email.subject" . }}')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[FIRING:2] INFO P4 BillingWatch digest"
    text = amtool("template", "render", f"--template.glob={TEMPLATES}/*.tmpl",
                  f"--template.data={tmp_path / 'data.json'}",
                  '--template.text={{ template "billingwatch.email.text" . }}').stdout
    assert "p95 lag 12m" in text and "Detector: mine" in text and "Severity: info (P4)" in text
    assert "Labels: \n" in text  # service, severity and priority have their own lines


def test_an_alert_without_a_priority_shows_its_severity_alone(tmp_path: Path) -> None:
    """A custom rule of the user's has a severity and no priority: no empty brackets."""
    alert = {"status": "firing", "labels": {"alertname": "MyRule", "severity": "warning"},
             "annotations": {"summary": "mine"}, "startsAt": "2025-01-01T00:00:00Z"}
    data = {"receiver": "notify", "status": "firing", "alerts": [alert], "groupLabels": {"alertname": "MyRule"},
            "commonLabels": alert["labels"], "commonAnnotations": {"summary": "mine"}, "externalURL": "http://am"}
    (tmp_path / "data.json").write_text(json.dumps(data))

    def rendered(name: str) -> str:
        result = amtool("template", "render", f"--template.glob={TEMPLATES}/*.tmpl",
                        f"--template.data={tmp_path / 'data.json'}", f'--template.text={{{{ template "{name}" . }}}}')
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert rendered("billingwatch.email.subject").strip() == "[FIRING:1] WARNING MyRule - mine"
    assert "Severity: warning\n" in rendered("billingwatch.email.text")
    assert "• Severity: `warning`\n" in rendered("billingwatch.slack.text")


def test_one_root_cause_pages_once(tmp_path: Path) -> None:
    """A real Alertmanager suppresses the consequences (exporter down, webhooks silent)."""
    config = local_config(tmp_path, "http://127.0.0.1:9/")
    with alertmanager(tmp_path / "am", write(tmp_path, config)) as am:
        def alert(name: str, **labels: str) -> dict[str, Any]:
            return {"labels": {"alertname": name, **labels}, "annotations": {"summary": name},
                    "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

        alerts = [
            alert("BillingWatchExporterDown", detector="exporter_down", severity="high", instance="a:9786"),
            alert("BillingAnomalyDetected", detector="duplicate_charge", severity="critical", livemode="true"),
            alert("BillingWebhookSilence", detector="webhook_silence", severity="high", livemode="false"),
            alert("BillingRevenueDrop", detector="revenue_drop", severity="high", livemode="false", currency="usd"),
        ]
        httpx.post(am.url + "/api/v2/alerts", json=alerts, timeout=10).raise_for_status()
        wait_until(lambda: len(am.alerts()) == 4, what="4 alerts in Alertmanager")
        state = {a["labels"]["alertname"]: a["status"] for a in am.alerts()}
        assert state["BillingWatchExporterDown"]["state"] == "active"
        for consequence in ("BillingAnomalyDetected", "BillingWebhookSilence", "BillingRevenueDrop"):
            assert state[consequence]["state"] == "suppressed" and state[consequence]["inhibitedBy"], consequence

        # Without the exporter alert, silence still mutes the revenue drop of its own mode only.
        resolved = {**alerts[0], "endsAt": alerts[0]["startsAt"]}
        live_drop = alert("BillingRevenueDrop", detector="revenue_drop", severity="high", livemode="true",
                          currency="usd")
        httpx.post(am.url + "/api/v2/alerts", json=[resolved, live_drop], timeout=10).raise_for_status()

        def settled() -> bool:
            by = {(a["labels"]["alertname"], a["labels"].get("livemode")): a["status"] for a in am.alerts()}
            return ("BillingWatchExporterDown", None) not in by and by.get(("BillingRevenueDrop", "true")) is not None

        wait_until(settled, what="the exporter alert resolved")
        by = {(a["labels"]["alertname"], a["labels"].get("livemode")): a["status"] for a in am.alerts()}
        assert by[("BillingAnomalyDetected", "true")]["state"] == "active"
        assert by[("BillingWebhookSilence", "false")]["state"] == "active"
        assert by[("BillingRevenueDrop", "false")]["state"] == "suppressed"
        assert by[("BillingRevenueDrop", "true")]["state"] == "active"


def test_site_settings_sit_on_one_line_each() -> None:
    """render.sh sets the SMTP server by replacing these lines with sed: keep them findable."""
    lines = CONFIG.read_text().splitlines()
    for key in ("smtp_smarthost", "smtp_require_tls"):
        assert len([line for line in lines if line.startswith(f"  {key}: ")]) == 1, key


def test_the_pushed_alert_mutes_the_rule_alert_of_its_detector_and_mode_only(tmp_path: Path) -> None:
    """A real Alertmanager: the detailed BillingAnomaly inhibits the count-only
    BillingAnomalyDetected of the same detector and livemode; neither the other detector's nor
    the other mode's. The pushed alert itself survives the exporter-down and store-down
    inhibitions (the exporter that pushed it had recorded it)."""
    config = local_config(tmp_path, "http://127.0.0.1:9/")
    with alertmanager(tmp_path / "am", write(tmp_path, config)) as am:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        def alert(name: str, **labels: str) -> dict[str, Any]:
            return {"labels": {"alertname": name, **labels}, "annotations": {"summary": name}, "startsAt": now}

        alerts = [
            alert(PUSHED, detector="duplicate_charge", severity="critical", livemode="false", event_id="evt_1"),
            alert("BillingAnomalyDetected", detector="duplicate_charge", severity="critical", livemode="false"),
            alert("BillingAnomalyDetected", detector="duplicate_charge", severity="critical", livemode="true"),
            alert("BillingAnomalyDetected", detector="negative_invoice", severity="medium", livemode="false"),
            alert("BillingWatchStoreDown", detector="store_down", severity="high", instance="b:9786"),
        ]
        httpx.post(am.url + "/api/v2/alerts", json=alerts, timeout=10).raise_for_status()
        wait_until(lambda: len(am.alerts()) == 5, what="5 alerts in Alertmanager")
        state = {(a["labels"]["alertname"], a["labels"].get("detector"), a["labels"].get("livemode")):
                 a["status"]["state"] for a in am.alerts()}
        assert state[(PUSHED, "duplicate_charge", "false")] == "active"
        assert state[("BillingAnomalyDetected", "duplicate_charge", "false")] == "suppressed"
        # The store-down rule mutes the other rule alerts, not the pushed one.
        assert state[("BillingAnomalyDetected", "duplicate_charge", "true")] == "suppressed"
        resolved = {**alerts[4], "endsAt": now}
        httpx.post(am.url + "/api/v2/alerts", json=[resolved], timeout=10).raise_for_status()
        wait_until(lambda: len(am.alerts()) == 4, what="the store-down alert resolved")
        state = {(a["labels"]["alertname"], a["labels"].get("detector"), a["labels"].get("livemode")):
                 a["status"]["state"] for a in am.alerts()}
        assert state == {(PUSHED, "duplicate_charge", "false"): "active",
                         ("BillingAnomalyDetected", "duplicate_charge", "false"): "suppressed",
                         ("BillingAnomalyDetected", "duplicate_charge", "true"): "active",
                         ("BillingAnomalyDetected", "negative_invoice", "false"): "active"}


def test_each_stripe_account_gets_its_own_notification_group(tmp_path: Path) -> None:
    """A real Alertmanager groups by alert, account and detector: one account's burst is one
    notification; another account's finding of the same detector is another."""
    config = local_config(tmp_path, "http://127.0.0.1:9/")
    with alertmanager(tmp_path / "am", write(tmp_path, config)) as am:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        alerts = [{"labels": {"alertname": "BillingAnomalyDetected", "detector": "duplicate_charge",
                              "severity": "critical", "priority": "P1", "service": "billingwatch",
                              "livemode": livemode, "account": account},
                   "annotations": {"summary": "x"}, "startsAt": now}
                  for account, livemode in (("eu", "true"), ("eu", "false"), ("us", "true"))]
        httpx.post(am.url + "/api/v2/alerts", json=alerts, timeout=10).raise_for_status()
        wait_until(lambda: len(am.alerts()) == 3, what="3 alerts in Alertmanager")
        groups = httpx.get(am.url + "/api/v2/alerts/groups", timeout=10).json()
        by_account = sorted((g["labels"].get("account"), len(g["alerts"])) for g in groups)
        assert by_account == [("eu", 2), ("us", 1)]
