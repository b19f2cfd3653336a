"""alertmanager/billingwatch-route.yml merged into an Alertmanager that already routes other alerts,
as docs/alert-delivery.md says: amtool accepts the result, BillingWatch's alerts reach its
receivers by severity, everyone else's alerts still reach the user's own receivers, and the
snippet routes and notifies as alertmanager.yml does (one set of routes, two packagings)."""

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from testkit.alerting import RENDER, TEMPLATES, render_env
from testkit.processes import binary, wait_until
from testkit.stack import alertmanager, http_sink
from tests.conftest import ROOT

SNIPPET = ROOT / "alertmanager" / "billingwatch-route.yml"
CONFIG = ROOT / "alertmanager" / "alertmanager.yml"
PREFIX = "billingwatch-"

# Someone's alertmanager.yml before BillingWatch: their own receivers, a route on severity (as
# the mixins' trees have) and an inhibition.
EXISTING = """
global:
  smtp_smarthost: smtp.corp.example:587
  smtp_from: alerts@corp.example
  resolve_timeout: 5m
templates:
  - /etc/alertmanager/templates/corp/*.tmpl
route:
  receiver: ops-default
  group_by: [alertname, cluster]
  routes:
    - matchers: ['team="db"']
      receiver: db-pager
    - matchers: ['severity="critical"']
      receiver: ops-pager
receivers:
  - name: ops-default
    email_configs:
      - to: ops@corp.example
  - name: db-pager
    webhook_configs:
      - url: https://pager.corp.example/db
  - name: ops-pager
    webhook_configs:
      - url: https://pager.corp.example/ops
inhibit_rules:
  - source_matchers: ['alertname="ClusterDown"']
    target_matchers: ['severity="warning"']
    equal: [cluster]
"""


def rendered_snippet(directory: Path, webhook_url: str) -> dict[str, Any]:
    """The snippet through render.sh, as the docs run it: email (the user's SMTP server) and the webhook."""
    (directory / "webhook_url").write_text(webhook_url + "\n")
    out = directory / "billingwatch-route.rendered.yml"
    env = render_env(directory, out, ALERTMANAGER_CONFIG=str(SNIPPET), SMTP_SMARTHOST="smtp.corp.example:587")
    result = subprocess.run(["sh", str(RENDER)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "render.sh: receivers enabled: email(smtp.corp.example) webhook\n"
    snippet: dict[str, Any] = yaml.safe_load(out.read_text())
    return snippet


def merge(existing: dict[str, Any], snippet: dict[str, Any]) -> dict[str, Any]:
    """docs/alert-delivery.md's steps: each list of the snippet into the same list, the route first."""
    merged = {**existing}
    merged["route"] = {**existing["route"], "routes": snippet["routes"] + existing["route"].get("routes", [])}
    for key in ("receivers", "inhibit_rules", "templates"):
        merged[key] = existing.get(key, []) + snippet[key]
    return merged


@pytest.fixture
def merged_file(tmp_path: Path) -> Path:
    merged = merge(yaml.safe_load(EXISTING), rendered_snippet(tmp_path, "https://tool.corp.example/billing"))
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return path


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("amtool"), *args], capture_output=True, text=True, timeout=60)


def test_the_merged_config_passes_amtool(merged_file: Path) -> None:
    result = amtool("check-config", str(merged_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_with_every_channel_the_snippet_needs_no_global_setting_but_smtp(tmp_path: Path) -> None:
    """Slack, Discord and the webhook as well: the user's config has no global Slack URL, and
    amtool still accepts the merge (Slack's URL file is named in the snippet's own receivers)."""
    for name, url in (("webhook_url", "https://tool.corp.example/billing"),
                      ("slack_api_url", "https://hooks.slack.example/services/x"),
                      ("discord_webhook_url", "https://discord.example/api/webhooks/1/x")):
        (tmp_path / name).write_text(url + "\n")
    out = tmp_path / "rendered.yml"
    env = render_env(tmp_path, out, ALERTMANAGER_CONFIG=str(SNIPPET), SMTP_SMARTHOST="smtp.corp.example:587")
    result = subprocess.run(["sh", str(RENDER)], env=env, capture_output=True, text=True, timeout=30)
    assert result.stderr == "render.sh: receivers enabled: email(smtp.corp.example) slack discord webhook\n"
    existing = yaml.safe_load(EXISTING)
    assert "slack_api_url" not in existing["global"] and "slack_api_url_file" not in existing["global"]
    merged = tmp_path / "alertmanager.yml"
    merged.write_text(yaml.safe_dump(merge(existing, yaml.safe_load(out.read_text())), sort_keys=False))
    checked = amtool("check-config", str(merged))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    page = next(r for r in yaml.safe_load(merged.read_text())["receivers"] if r["name"] == "billingwatch-page")
    assert page["slack_configs"][0]["api_url_file"] == str(tmp_path / "slack_api_url")


BW = {"service": "billingwatch", "alertname": "BillingAnomalyDetected", "detector": "duplicate_charge"}


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({**BW, "severity": "critical", "priority": "P1"}, "billingwatch-page"),
        ({**BW, "severity": "warning", "priority": "P2"}, "billingwatch-notify"),
        ({**BW, "severity": "warning", "priority": "P3"}, "billingwatch-notify"),
        ({**BW, "severity": "info", "priority": "P4"}, "billingwatch-digest"),
        ({**BW, "severity": "unknown"}, "billingwatch-notify"),
        # BillingWatch's branch comes first: the user's severity route does not take its alerts,
        # nor a team route a label BillingWatch never sets.
        ({**BW, "severity": "critical", "priority": "P1", "team": "db"}, "billingwatch-page"),
        # Everyone else's alerts are routed as before.
        ({"alertname": "ClusterDown", "severity": "critical", "cluster": "eu"}, "ops-pager"),
        ({"alertname": "PostgresDown", "team": "db", "severity": "critical"}, "db-pager"),
        ({"alertname": "DiskFilling", "severity": "warning"}, "ops-default"),
        ({"alertname": "BillingAnomalyDetected", "severity": "info"}, "ops-default"),  # no service label
    ],
)
def test_routes_in_the_merged_tree(merged_file: Path, labels: dict[str, str], receiver: str) -> None:
    result = amtool("config", "routes", "test", f"--config.file={merged_file}", f"--verify.receivers={receiver}",
                    *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr


def unprefixed(node: Any) -> Any:
    """`node` with the snippet's receiver names as alertmanager.yml spells them."""
    if isinstance(node, dict):
        return {k: unprefixed(v) for k, v in node.items()}
    if isinstance(node, list):
        return [unprefixed(v) for v in node]
    return node.removeprefix(PREFIX) if isinstance(node, str) else node


def test_the_snippet_routes_and_notifies_as_alertmanager_yml_does() -> None:
    snippet, config = yaml.safe_load(SNIPPET.read_text()), yaml.safe_load(CONFIG.read_text())
    (route,) = snippet["routes"]
    assert route["matchers"] == ['service="billingwatch"']
    assert unprefixed({k: v for k, v in route.items() if k != "matchers"}) == config["route"]
    assert all(r["name"].startswith(PREFIX) for r in snippet["receivers"])
    for receiver in snippet["receivers"]:
        for slack in receiver.get("slack_configs", []):  # the user's global Slack URL is not ours
            assert slack.pop("api_url_file") == config["global"]["slack_api_url_file"]
    assert unprefixed(snippet["receivers"]) == config["receivers"]
    # The inhibitions are alertmanager.yml's, kept to BillingWatch's own alerts.
    for ours, theirs in zip(snippet["inhibit_rules"], config["inhibit_rules"], strict=True):
        for key in ("source_matchers", "target_matchers"):
            assert ours[key] == ['service="billingwatch"', *theirs[key]]
        assert ours.get("equal") == theirs.get("equal")
    assert snippet["templates"] == ["/etc/alertmanager/templates/billingwatch/*.tmpl"]


def test_a_real_alertmanager_on_the_merged_tree(tmp_path: Path) -> None:
    """BillingWatch's alert goes to its receiver, the user's to theirs; BillingWatch's exporter-down
    inhibits BillingWatch's own alerts and not a user's alert that happens to be named Billing*."""
    with http_sink() as http:
        existing = yaml.safe_load(EXISTING)
        for receiver in existing["receivers"]:
            receiver.pop("email_configs", None)
            receiver["webhook_configs"] = [{"url": f"{http.url}/{receiver['name']}"}]
        snippet = rendered_snippet(tmp_path, http.url + "/billingwatch")
        for receiver in snippet["receivers"]:
            receiver.pop("email_configs", None)
        merged = merge(existing, snippet)
        merged["templates"] = [str(TEMPLATES / "*.tmpl")]
        (route,) = snippet["routes"]
        for node in [merged["route"], route, *route["routes"]]:
            node.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
        path = tmp_path / "merged.yml"
        path.write_text(yaml.safe_dump(merged, sort_keys=False))
        with alertmanager(tmp_path / "am", path) as am:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

            def alert(**labels: str) -> dict[str, Any]:
                return {"labels": labels, "annotations": {"summary": labels["alertname"]}, "startsAt": now}

            httpx.post(am.url + "/api/v2/alerts", timeout=10, json=[
                alert(**BW, severity="critical", priority="P1", livemode="true"),
                alert(alertname="ClusterDown", severity="critical", cluster="eu"),
            ]).raise_for_status()
            _, body = http.wait_for("/billingwatch", lambda b: isinstance(b, dict), timeout=45)
            assert body["receiver"] == "billingwatch-page"
            assert [a["labels"]["alertname"] for a in body["alerts"]] == ["BillingAnomalyDetected"]
            _, body = http.wait_for("/ops-pager", lambda b: isinstance(b, dict), timeout=45)
            assert [a["labels"]["alertname"] for a in body["alerts"]] == ["ClusterDown"]

            httpx.post(am.url + "/api/v2/alerts", timeout=10, json=[
                alert(service="billingwatch", alertname="BillingWatchExporterDown", detector="exporter_down",
                      severity="warning", priority="P2"),
                alert(service="billingwatch", alertname="BillingRevenueDrop", detector="revenue_drop",
                      severity="warning", priority="P2", livemode="true"),
                alert(alertname="BillingDatabaseSlow", severity="warning"),
            ]).raise_for_status()
            wait_until(lambda: len(am.alerts()) == 5, what="5 alerts in Alertmanager")
            state = {a["labels"]["alertname"]: a["status"]["state"] for a in am.alerts()}
            assert state["BillingRevenueDrop"] == "suppressed"
            assert state["BillingDatabaseSlow"] == "active"
            assert state["BillingWatchExporterDown"] == "active"
