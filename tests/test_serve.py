"""`billingwatch serve` as a user runs it: a real uvicorn process, configured from the environment."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import billingwatch
from billingwatch.config import ConfigError, from_env
from billingwatch.fixtures import stripe_events as se
from testkit.processes import RedisServer
from tests.conftest import ROOT, SECRET, running_exporter
from tests.metrics import scrape, value

JSON = {"Content-Type": "application/json"}


def test_serve_accepts_a_signed_event_and_shows_it_in_metrics() -> None:
    with running_exporter() as exporter:
        payload = se.body(se.event("invoice.payment_failed", se.invoice(status="open", attempt_count=2)))
        response = httpx.post(exporter.url + "/webhooks/stripe", content=payload,
                              headers=se.signed_headers(payload, SECRET))
        assert response.status_code == 200, response.text
        metrics = scrape(exporter.url)
        assert value(metrics, "billingwatch_invoice_payment_failures_total", attempt="2", livemode="false") == 1
        assert value(metrics, "billingwatch_build_info", python_version=sys.version.split()[0],
                     store="memory", version=billingwatch.__version__) == 1


def test_serve_on_redis_shares_state_between_two_replicas(redis_server: RedisServer, redis_prefix: str) -> None:
    env = {"REDIS_URL": redis_server.url, "BILLINGWATCH_REDIS_PREFIX": redis_prefix}
    with running_exporter(**env) as first, running_exporter(**env) as second:
        evt = se.event("charge.succeeded", se.charge())
        payload = se.body(evt)
        assert httpx.post(first.url + "/webhooks/stripe", content=payload,
                          headers=se.signed_headers(payload, SECRET)).json()["duplicate"] is False
        assert httpx.post(second.url + "/webhooks/stripe", content=payload,
                          headers=se.signed_headers(payload, SECRET)).json()["duplicate"] is True
        for exporter in (first, second):
            text = scrape(exporter.url)
            assert value(text, "billingwatch_charges_total", currency="usd", livemode="false",
                         status="succeeded") == 1
        assert httpx.get(second.url + "/ready").json() == {"status": "ready", "store": "redis"}


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    base.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "billingwatch", *args], env=base, capture_output=True, text=True,
                          timeout=30)


def test_serve_refuses_to_start_without_a_secret_and_says_why() -> None:
    result = run_cli("serve", "--port", "1", env={})
    assert result.returncode == 2
    assert "STRIPE_WEBHOOK_SECRET is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_secret_file_is_a_clear_error() -> None:
    result = run_cli("serve", env={"STRIPE_WEBHOOK_SECRET_FILE": "/nonexistent/secret"})
    assert result.returncode == 2 and "STRIPE_WEBHOOK_SECRET_FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_secret_file_rotation_list_and_no_secret_in_logs(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("whsec_first_rotation_a, " + SECRET + "\n")
    with running_exporter(STRIPE_WEBHOOK_SECRET="", STRIPE_WEBHOOK_SECRET_FILE=str(secret_file)) as exporter:
        for secret in ("whsec_first_rotation_a", SECRET):
            payload = se.body(se.event("charge.succeeded", se.charge(amount=int(time.time()) % 1000 + 1)))
            response = httpx.post(exporter.url + "/webhooks/stripe", content=payload,
                                  headers=se.signed_headers(payload, secret))
            assert response.status_code == 200
        process = exporter.process
        assert process is not None
        exporter.stop()
        assert process.stderr is not None
        logs = process.stderr.read().decode()
    assert "Uvicorn running" in logs or "listening" in logs
    assert "whsec_" not in logs


def test_insecure_mode_is_explicit_and_warns() -> None:
    with running_exporter(STRIPE_WEBHOOK_SECRET="", BILLINGWATCH_INSECURE_SKIP_SIGNATURE="1") as exporter:
        payload = se.body(se.event("charge.succeeded", se.charge()))
        assert httpx.post(exporter.url + "/webhooks/stripe", content=payload, headers=JSON).status_code == 200
        process = exporter.process
        assert process is not None
        exporter.stop()
        assert process.stderr is not None
        assert "signature verification is OFF" in process.stderr.read().decode()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BILLINGWATCH_PORT": "http"}, "BILLINGWATCH_PORT must be an integer"),
        ({"BILLINGWATCH_DEDUP_TTL_SECONDS": "60"}, "at least 604800"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_env(env)


def test_settings_repr_hides_secrets() -> None:
    settings = from_env({"STRIPE_WEBHOOK_SECRET": "whsec_hidden", "BILLINGWATCH_API_TOKEN": "tok_hidden"})
    assert settings.webhook_secrets == ("whsec_hidden",)
    assert "hidden" not in repr(settings)


def test_readme_puts_both_commands_first_and_links_the_metrics_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    head = readme[: readme.index("\n## ")]  # before the first section: what a newcomer pastes
    assert "billingwatch serve" in head and "bash scripts/test.sh" in head
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    # The family-by-family reference is docs/metrics.md, checked against /metrics by tests/test_docs.py.
    assert "(docs/metrics.md)" in readme


def worker_processes(pid: int) -> int:
    """The uvicorn workers a supervisor forked (its children other than multiprocessing's resource tracker)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid and b"spawn_main" in cmdline:
            count += 1
    return count


def test_serve_workers_auto_runs_one_worker_per_usable_core(redis_server: RedisServer, redis_prefix: str) -> None:
    cores = len(os.sched_getaffinity(0))
    with running_exporter(REDIS_URL=redis_server.url, BILLINGWATCH_REDIS_PREFIX=redis_prefix) as exporter:
        exporter.stop()
        exporter.start("--workers", "auto")
        assert exporter.process is not None
        assert worker_processes(exporter.process.pid) == (cores if cores > 1 else 0)  # 1: no supervisor
        payload = se.body(se.event("charge.succeeded", se.charge()))
        response = httpx.post(exporter.url + "/webhooks/stripe", content=payload,
                              headers=se.signed_headers(payload, SECRET))
        assert response.json()["duplicate"] is False


def test_serve_workers_auto_needs_redis_even_on_one_core() -> None:
    result = run_cli("serve", "--port", "1", "--workers", "auto", env={"STRIPE_WEBHOOK_SECRET": SECRET})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "billingwatch: --workers auto needs REDIS_URL: the in-process store is not shared between workers")


@pytest.mark.parametrize("workers", ["0", "two", "257"])
def test_serve_workers_must_be_a_count_or_auto(workers: str) -> None:
    result = run_cli("serve", "--port", "1", "--workers", workers, env={"STRIPE_WEBHOOK_SECRET": SECRET})
    assert result.returncode == 2
    assert "argument --workers: must be a number from 1 to 256, or auto" in result.stderr
    assert "Traceback" not in result.stderr
