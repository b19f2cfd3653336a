"""docker-compose.yml: valid for docker-compose (no engine runs here, so nothing is built or
started), every file it mounts is in the repository, and the configs it mounts pass the same
tools the rest of the suite runs them with (promtool, amtool)."""

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, binary

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = {"exporter", "redis", "prometheus", "alertmanager", "grafana", "mailpit"}


def compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    # --env-file: a developer's own .env must not change what the test sees.
    return subprocess.run(
        [binary("docker-compose"), "--env-file", str(env_file), "-f", str(COMPOSE), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The compose file as docker-compose resolves it with .env.example, demo profile included."""
    checked = compose("--profile", "demo", "config", "-q")
    assert checked.returncode == 0, checked.stderr
    result = compose("--profile", "demo", "config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_config_is_valid_without_the_demo_profile() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_required_secrets_have_no_default(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose("config", "-q", env_file=empty)
    assert result.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET" in result.stderr or "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_services_have_healthchecks_and_loopback_ports(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) == SERVICES | {"simulate"}
    for name in SERVICES:
        assert services[name]["healthcheck"]["test"], name
        for port in services[name].get("ports", []):
            assert port.get("host_ip") == "127.0.0.1" if isinstance(port, dict) else port.startswith("127.0.0.1:"), name
    assert services["simulate"]["profiles"] == ["demo"]
    assert services["simulate"]["image"] == services["exporter"]["image"]
    assert services["simulate"]["command"][0] == "simulate"
    assert "appendonly" in " ".join(services["redis"]["command"])


def bind_mounts(resolved: dict[str, Any]) -> list[tuple[str, Path, str]]:
    mounts = []
    for name, service in resolved["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("/"):
                mounts.append((name, Path(source), target))
    return mounts


def test_mounted_files_are_in_the_repository(resolved: dict[str, Any]) -> None:
    mounts = bind_mounts(resolved)
    assert mounts
    ignored = (ROOT / ".gitignore").read_text().split()
    for service, source, _ in mounts:
        relative = source.relative_to(ROOT)
        if relative.parts[0] == "secrets":  # the user's secret files: never in the repository
            assert "secrets/" in ignored
            continue
        assert source.exists(), f"{service} mounts {relative}, which is not in the repository"


def test_prometheus_config_passes_promtool_with_the_project_rules(resolved: dict[str, Any]) -> None:
    # prometheus/ and rules/ are mounted side by side, so the relative rule path resolves the
    # same in the checkout: promtool checks the committed rules through the compose config.
    targets = {target: source for _, source, target in bind_mounts(resolved)}
    assert targets["/etc/billingwatch/prometheus"] == ROOT / "prometheus"
    assert targets["/etc/billingwatch/rules"] == ROOT / "rules"
    result = subprocess.run([binary("promtool"), "check", "config", str(ROOT / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "billingwatch.rules.yml" in result.stdout and "SUCCESS" in result.stdout
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["billingwatch"]["static_configs"][0]["targets"] == ["exporter:9786"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_grafana_provisions_the_dashboard_and_datasource(resolved: dict[str, Any]) -> None:
    grafana = resolved["services"]["grafana"]
    targets = {target: source for name, source, target in bind_mounts(resolved) if name == "grafana"}
    provisioning = targets["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "billingwatch.yml").read_text())["providers"]
    dashboards = targets[provider["options"]["path"]]
    assert (dashboards / "billingwatch.json").exists()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/billingwatch.json"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    prometheus = next(s for s in sources if s["type"] == "prometheus")
    assert prometheus["url"] == "http://prometheus:9090" and prometheus["isDefault"] is True


def test_alertmanager_entrypoint_yields_a_valid_config(resolved: dict[str, Any], tmp_path: Path) -> None:
    """Runs the service's command on this machine, paths mapped to the checkout and Alertmanager
    replaced by a stand-in that keeps the config it is given; amtool checks that config."""
    service = resolved["services"]["alertmanager"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    mounts = {target: source for name, source, target in bind_mounts(resolved) if name == "alertmanager"}
    assert mounts["/etc/alertmanager/alertmanager.yml"] == ROOT / "alertmanager" / "alertmanager.yml"
    data = tmp_path / "data"
    data.mkdir()
    kept = tmp_path / "kept.yml"
    stand_in = tmp_path / "alertmanager"
    stand_in.write_text('#!/bin/sh\nfor a; do case "$a" in --config.file=*) cp "${a#--config.file=}" "$KEPT";; '
                        "esac; done\n")
    stand_in.chmod(0o755)
    local = (script.replace("$$", "$")
             .replace("/etc/alertmanager/", "@ETC@").replace("/bin/alertmanager", str(stand_in))
             .replace("/alertmanager/", f"{data}/").replace("@ETC@", f"{ROOT}/alertmanager/"))
    env = {**{k: str(v) for k, v in service["environment"].items()}, "PATH": "/usr/bin:/bin", "KEPT": str(kept),
           "ALERTMANAGER_RENDERED": str(data / "rendered.yml"),
           "BILLINGWATCH_WEBHOOK_URL": "https://hooks.example.test/billing",
           "BILLINGWATCH_WEBHOOK_URL_FILE": str(tmp_path / "absent")}
    result = subprocess.run(["/bin/sh", "-c", local], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    checked = subprocess.run([binary("amtool"), "check-config", str(kept)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(kept.read_text())
    assert config["global"]["smtp_smarthost"] == "mailpit:1025"  # the mail catcher by default
    assert config["global"]["smtp_require_tls"] is False
    assert "https://hooks.example.test/billing" in kept.read_text()
