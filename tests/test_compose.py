"""docker-compose.yml: valid for docker-compose (no engine runs here, so nothing is built or
started), every file it mounts is in the repository, and the configs it mounts pass the same
tools the rest of the suite runs them with (promtool, amtool)."""

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from billingwatch.store import RedisStore
from testkit.alerting import RENDER
from testkit.processes import binary, free_port, port_open, wait_until
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = {"exporter", "redis", "prometheus", "alertmanager", "grafana", "mailpit", "caddy"}
# What a user must fill in: .env.example leaves these empty, and compose refuses to start so.
FILLED = {"GRAFANA_ADMIN_PASSWORD": "grafana-test-password", "REDIS_PASSWORD": "0123abcd" * 4,
          "BILLINGWATCH_WEB_PASSWORD": "web-test-password-0123"}


@pytest.fixture(scope="module")
def filled_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("env") / "filled.env"
    path.write_text(ENV_EXAMPLE.read_text() + "".join(f"{k}={v}\n" for k, v in FILLED.items()))
    return path


def compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    # --env-file: a developer's own .env must not change what the test sees.
    return subprocess.run(
        [binary("docker-compose"), "--env-file", str(env_file), "-f", str(COMPOSE), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


@pytest.fixture(scope="module")
def resolved(filled_env: Path) -> dict[str, Any]:
    """The compose file as docker-compose resolves it with .env.example filled in, demo profile
    included."""
    checked = compose("--profile", "demo", "config", "-q", env_file=filled_env)
    assert checked.returncode == 0, checked.stderr
    result = compose("--profile", "demo", "config", env_file=filled_env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_config_is_valid_without_the_demo_profile(filled_env: Path) -> None:
    result = compose("config", "-q", env_file=filled_env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(FILLED))
def test_example_env_does_not_start_until_each_password_is_set(filled_env: Path, tmp_path: Path, name: str) -> None:
    """No placeholder passwords: .env.example leaves them empty and compose names the missing one."""
    assert f"\n{name}=\n" in ENV_EXAMPLE.read_text()
    partial = tmp_path / "partial.env"
    partial.write_text("".join(line + "\n" for line in filled_env.read_text().splitlines()
                               if line != f"{name}={FILLED[name]}"))
    result = compose("config", "-q", env_file=partial)
    assert result.returncode != 0 and name in result.stderr


def test_required_secrets_have_no_default(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose("config", "-q", env_file=empty)
    assert result.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET" in result.stderr or "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_services_have_healthchecks_and_loopback_ports(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) == SERVICES | {"simulate", "digest"}  # docker-compose v1 lists every profile's services
    for name in SERVICES:
        assert services[name]["healthcheck"]["test"], name
        for port in services[name].get("ports", []):
            assert port.get("host_ip") == "127.0.0.1" if isinstance(port, dict) else port.startswith("127.0.0.1:"), name
    assert services["simulate"]["profiles"] == ["demo"]
    assert services["simulate"]["image"] == services["exporter"]["image"]
    assert services["simulate"]["command"][0] == "simulate"
    assert "appendonly" in " ".join(services["redis"]["command"])


def test_redis_requires_the_password_the_exporter_and_healthcheck_use(resolved: dict[str, Any], tmp_path: Path) -> None:
    """Runs the service's command with this machine's redis-server (wrapped to a free loopback
    port): anonymous clients are refused, the healthcheck and the exporter's REDIS_URL get in."""
    services = resolved["services"]
    redis = services["redis"]
    port = free_port()
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    for name, extra in (("redis-server", f'"$@" --port {port} --bind 127.0.0.1 --dir {tmp_path}'),
                        ("redis-cli", f'-p {port} "$@"')):
        (wrappers / name).write_text(f"#!/bin/sh\nexec {binary(name)} {extra}\n")
        (wrappers / name).chmod(0o755)
    env = {**redis["environment"], "PATH": f"{wrappers}:/usr/bin:/bin"}
    command = [arg.replace("$$", "$") for arg in redis["command"]]  # compose's escape of $
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port), what="the compose redis command")
        anonymous = subprocess.run([str(wrappers / "redis-cli"), "ping"], capture_output=True, text=True, timeout=10)
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr
        kind, check = redis["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        assert subprocess.run(["/bin/sh", "-c", check], env=env, timeout=10).returncode == 0
        wrong = {**env, "REDISCLI_AUTH": "wrong"}
        assert subprocess.run(["/bin/sh", "-c", check], env=wrong, timeout=10).returncode != 0
        url = services["exporter"]["environment"]["REDIS_URL"]
        assert url.startswith("redis://:") and url.endswith("@redis:6379/0")
        store = RedisStore(url.replace("@redis:6379", f"@127.0.0.1:{port}"))

        async def ping() -> bool:
            try:
                return await store.ping()
            finally:
                await store.close()

        assert asyncio.run(ping())
    finally:
        process.terminate()
        process.wait(10)


def test_prometheus_has_no_lifecycle_api(resolved: dict[str, Any]) -> None:
    command = resolved["services"]["prometheus"]["command"]
    assert not [arg for arg in command if "lifecycle" in arg]


def test_the_exporter_pushes_anomalies_to_the_stacks_alertmanager(resolved: dict[str, Any]) -> None:
    env = resolved["services"]["exporter"]["environment"]
    assert env["BILLINGWATCH_ALERTMANAGER_URLS"] == "http://alertmanager:9093"
    assert "alertmanager" in resolved["services"]  # its API listens on 9093 in the container


def test_only_caddy_faces_stripe_and_the_exporter_is_not_published_publicly(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    caddy, exporter = services["caddy"], services["exporter"]
    assert caddy["environment"]["BILLINGWATCH_UPSTREAM"] == "exporter:9786"
    # Caddy's body limit is the exporter's.
    assert caddy["environment"]["BILLINGWATCH_MAX_BODY_BYTES"] == exporter["environment"]["BILLINGWATCH_MAX_BODY_BYTES"]
    targets = {target: source for name, source, target in bind_mounts(resolved) if name == "caddy"}
    assert targets["/etc/caddy/Caddyfile"] == ROOT / "proxy" / "Caddyfile"
    for port in exporter.get("ports", []):
        assert (port["host_ip"] if isinstance(port, dict) else port.split(":")[0]) == "127.0.0.1"
    # The exporter answers the names it is reached by inside the stack, and no others.
    hosts = exporter["environment"]["BILLINGWATCH_ALLOWED_HOSTS"].split(",")
    assert "exporter" in hosts and "*" not in hosts
    assert "simulate" in services and "--url=http://exporter:9786/webhooks/stripe" in services["simulate"]["command"]


def test_rendered_alertmanager_config_is_not_on_a_persistent_volume(resolved: dict[str, Any]) -> None:
    service = resolved["services"]["alertmanager"]
    rendered = service["environment"]["ALERTMANAGER_RENDERED"]
    assert service["entrypoint"] == ["/bin/sh", "/etc/alertmanager/render.sh"]
    assert "/tmp" in service["tmpfs"] and rendered.startswith("/tmp/")
    volumes = [v.split(":")[1] for v in service["volumes"]]
    assert not [v for v in volumes if rendered.startswith(v.rstrip("/") + "/")]


def test_images_are_current_releases_pinned_to_exact_versions(filled_env: Path) -> None:
    """Compose Specification (no `version:`), every image an exact release (no `latest`, no
    floating minor), Prometheus 3 and an Alertmanager that reads webhook URLs from files."""
    assert "version" not in yaml.safe_load(COMPOSE.read_text())
    result = compose("--profile", "demo", "--profile", "digest", "config", env_file=filled_env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    images = {name: service["image"] for name, service in services.items() if "build" not in service}
    versions = {}
    for name, image in images.items():
        found = re.fullmatch(r"[\w./-]+:v?(\d+)\.(\d+)\.(\d+)(-alpine)?", image)
        assert found, f"{name}: {image} is not pinned to an exact release"
        versions[name] = tuple(int(found[i]) for i in (1, 2, 3))
    assert versions["prometheus"] >= (3, 0, 0)
    assert versions["alertmanager"] >= (0, 28, 0)
    assert versions["grafana"] >= (12, 0, 0)
    assert versions["caddy"] >= (2, 10, 0)
    assert versions["redis"] >= (7, 4, 0)


def test_the_docs_use_the_compose_v2_command() -> None:
    """`docker compose ...`, not the retired `docker-compose` v1 (this machine's validator keeps
    the old binary name; only tests/ run it)."""
    v1 = re.compile(r"docker-compose (up|down|restart|run|logs|exec|pull|ps|--profile|-f)\b")
    texts = [ROOT / "README.md", ENV_EXAMPLE, COMPOSE, *sorted((ROOT / "docs").glob("*.md"))]
    for path in texts:
        assert not v1.search(path.read_text()), path.name


def test_the_digest_reads_only_the_smtp_password(filled_env: Path) -> None:
    """The digest mails a summary: of the Alertmanager secrets it may read the SMTP password only
    (the directory also holds the Slack, Discord and webhook credentials)."""
    result = compose("--profile", "digest", "config", env_file=filled_env)
    assert result.returncode == 0, result.stderr
    digest = yaml.safe_load(result.stdout)["services"]["digest"]
    password_file = digest["environment"]["BILLINGWATCH_DIGEST_AUTH_PASSWORD_FILE"]
    mounts = [volume.split(":")[:2] for volume in digest["volumes"]]
    assert [target for _, target in mounts] == [password_file]
    assert all(source.endswith("/smtp_password") for source, _ in mounts)


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


def test_the_exporter_serves_nothing_but_webhook_and_probes_without_the_password(resolved: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    """Runs the exporter service's command on this machine (`billingwatch` from this checkout,
    the in-process store, a free loopback port): the web configuration it writes asks for the
    password of .env, and the server it starts no longer has the password in its environment."""
    service = resolved["services"]["exporter"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    environment = {k: str(v) for k, v in service["environment"].items()}
    password = environment["BILLINGWATCH_WEB_PASSWORD"]
    assert password == FILLED["BILLINGWATCH_WEB_PASSWORD"]
    config_file = environment["BILLINGWATCH_WEB_CONFIG_FILE"]
    assert "/tmp" in service["tmpfs"] and config_file.startswith("/tmp/")
    port = free_port()
    env = {**{k: v for k, v in environment.items() if not k.startswith(("REDIS_URL", "BILLINGWATCH_ALERTMANAGER"))},
           "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(ROOT),
           "BILLINGWATCH_WEB_CONFIG_FILE": str(tmp_path / "web-config.yml"),
           "BILLINGWATCH_HOST": "127.0.0.1", "BILLINGWATCH_PORT": str(port)}
    process = subprocess.Popen(["/bin/sh", "-c", script.replace("$$", "$")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(url + "/ready", timeout=1).status_code == 200, what="the compose exporter")
        for path in ("/metrics", "/api/anomalies", "/events", "/"):
            assert httpx.get(url + path).status_code == 401, path
            assert httpx.get(url + path, auth=("admin", password)).status_code == 200, path
        served = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")  # exec kept the pid
        assert any(line.startswith(b"BILLINGWATCH_WEB_CONFIG_FILE=") for line in served)
        assert not any(line.startswith(b"BILLINGWATCH_WEB_PASSWORD=") for line in served)
        assert password not in (tmp_path / "web-config.yml").read_text()
    finally:
        process.terminate()
        process.wait(15)


def test_prometheus_scrapes_the_exporter_with_the_password(resolved: dict[str, Any], tmp_path: Path) -> None:
    """Runs the Prometheus service's command with a stand-in for Prometheus: the password file
    prometheus.yml's basic_auth reads holds the password, and Prometheus' environment does not."""
    service = resolved["services"]["prometheus"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    auth = {job["job_name"]: job for job in config["scrape_configs"]}["billingwatch"]["basic_auth"]
    assert auth["username"] == "admin"  # the user the exporter's command writes
    assert "--user admin" in resolved["services"]["exporter"]["command"][0]
    run_dir = str(Path(auth["password_file"]).parent)
    assert run_dir in service["tmpfs"]
    stand_in = tmp_path / "prometheus"
    stand_in.write_text('#!/bin/sh\nenv > "$KEPT"\necho "$@" >> "$KEPT"\n')
    stand_in.chmod(0o755)
    kept = tmp_path / "kept"
    local = script.replace("$$", "$").replace(run_dir, str(tmp_path)).replace("/bin/prometheus", str(stand_in))
    env = {**{k: str(v) for k, v in service["environment"].items()}, "PATH": "/usr/bin:/bin", "KEPT": str(kept)}
    result = subprocess.run(["/bin/sh", "-c", local], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / Path(auth["password_file"]).name).read_text() == FILLED["BILLINGWATCH_WEB_PASSWORD"]
    seen = kept.read_text()
    assert "BILLINGWATCH_WEB_PASSWORD" not in seen and FILLED["BILLINGWATCH_WEB_PASSWORD"] not in seen
    assert "--config.file=/etc/billingwatch/prometheus/prometheus.yml" in seen and "lifecycle" not in seen


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


@pytest.mark.parametrize(
    ("extra", "printed"),
    [({}, "email(mailpit)"),
     ({"BILLINGWATCH_WEBHOOK_URL": "https://hooks.example.test/billing",
       "BILLINGWATCH_DISCORD_WEBHOOK_URL": "https://discord.example.test/api/webhooks/1/x"},
      "email(mailpit) discord webhook"),
     ({"SMTP_SMARTHOST": "", "BILLINGWATCH_WEBHOOK_URL": "https://hooks.example.test/billing"}, "webhook")],
    ids=["default", "webhook+discord", "no-email"],
)
def test_alertmanager_entrypoint_yields_a_valid_config(filled_env: Path, tmp_path: Path, extra: dict[str, str],
                                                        printed: str) -> None:
    """Runs the service's entrypoint and command on this machine, with .env.example (plus `extra`)
    resolved by docker-compose, paths mapped to the checkout and Alertmanager replaced by a
    stand-in that keeps the config it is given: the log names the receivers, amtool checks it."""
    env_file = tmp_path / "site.env"
    env_file.write_text(filled_env.read_text() + "".join(f"{k}={v}\n" for k, v in extra.items()))
    result = compose("config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    service = config["services"]["alertmanager"]
    mounts = {target: source for name, source, target in bind_mounts(config) if name == "alertmanager"}
    assert mounts["/etc/alertmanager/alertmanager.yml"] == ROOT / "alertmanager" / "alertmanager.yml"
    # render.sh renders the alertmanager.yml mounted beside it.
    assert mounts["/etc/alertmanager/render.sh"] == ROOT / "alertmanager" / "render.sh"
    shell, script = service["entrypoint"]
    assert shell == "/bin/sh" and mounts[script] == RENDER
    kept = tmp_path / "kept.yml"
    stand_in = tmp_path / "alertmanager"
    stand_in.write_text('#!/bin/sh\nfor a; do case "$a" in --config.file=*) cp "${a#--config.file=}" "$KEPT";; '
                        "esac; done\n")
    stand_in.chmod(0o755)
    binary_path, *arguments = service["command"]
    assert binary_path == "/bin/alertmanager" and "--cluster.listen-address=" in arguments
    absent = str(tmp_path / "absent")  # the container's secret files: none on this machine
    env = {**{k: str(v) for k, v in service["environment"].items()}, "PATH": "/usr/bin:/bin", "KEPT": str(kept),
           "ALERTMANAGER_RENDERED": str(tmp_path / "rendered.yml"), "BILLINGWATCH_WEBHOOK_URL_FILE": absent,
           "BILLINGWATCH_DISCORD_WEBHOOK_URL_FILE": absent, "BILLINGWATCH_SLACK_API_URL_FILE": absent}
    ran = subprocess.run(["/bin/sh", str(RENDER), str(stand_in), *arguments], env=env, capture_output=True,
                         text=True, timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == f"render.sh: receivers enabled: {printed}\n"
    checked = subprocess.run([binary("amtool"), "check-config", str(kept)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rendered = yaml.safe_load(kept.read_text())
    assert rendered["global"]["smtp_smarthost"] == extra.get("SMTP_SMARTHOST", "mailpit:1025")
    assert rendered["global"]["smtp_require_tls"] is False
    text = kept.read_text()
    for key, channel in (("BILLINGWATCH_WEBHOOK_URL", "webhook_configs"),
                         ("BILLINGWATCH_DISCORD_WEBHOOK_URL", "discord_configs")):
        assert (key in extra) == any(r.get(channel) for r in rendered["receivers"]), key
        assert key not in extra or extra[key] in text
