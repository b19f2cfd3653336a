"""Issue 23 e: an empty or blank *_FILE setting is a start-up error (one line, naming the setting,
never the content), for every command that reads one; real `billingwatch` processes."""

from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET, running_exporter
from tests.test_serve import run_cli

SERVE_FILES = ["BILLINGWATCH_API_TOKEN", "STRIPE_WEBHOOK_SECRET", "REDIS_URL", "BILLINGWATCH_ALERTMANAGER_URLS"]


def refused(result_stderr: str, returncode: int, setting: str) -> None:
    assert returncode == 2, result_stderr
    assert result_stderr.count("\n") == 1 and result_stderr.startswith(f"billingwatch: {setting}_FILE: ")
    assert "empty" in result_stderr and "Traceback" not in result_stderr


@pytest.mark.parametrize("content", ["", " \n\t\n"])
@pytest.mark.parametrize("setting", SERVE_FILES)
def test_serve_refuses_an_empty_setting_file(tmp_path: Path, setting: str, content: str) -> None:
    empty = tmp_path / "setting"
    empty.write_text(content)
    # An empty token file used to start the exporter with customer data served to loopback.
    result = run_cli("serve", "--port", "1", env={"STRIPE_WEBHOOK_SECRET": SECRET, f"{setting}_FILE": str(empty)})
    refused(result.stderr, result.returncode, setting)


@pytest.mark.parametrize("command", [["reconcile", "--since", "1d"], ["backfill", "--since", "1d"]])
def test_stripe_commands_refuse_an_empty_key_file(tmp_path: Path, command: list[str]) -> None:
    empty = tmp_path / "key"
    empty.write_text("\n")
    result = run_cli(*command, env={"STRIPE_API_KEY": "rk_test_from_the_environment",
                                    "STRIPE_API_KEY_FILE": str(empty)})
    refused(result.stderr, result.returncode, "STRIPE_API_KEY")


@pytest.mark.parametrize(("setting", "args"), [
    ("BILLINGWATCH_API_TOKEN", ["--stdout"]),
    ("BILLINGWATCH_DIGEST_AUTH_PASSWORD", []),  # read when a user name is set
])
def test_digest_refuses_an_empty_setting_file(tmp_path: Path, setting: str, args: list[str]) -> None:
    empty = tmp_path / "setting"
    empty.write_text("  ")
    result = run_cli("digest", *args, env={
        f"{setting}_FILE": str(empty), "BILLINGWATCH_DIGEST_SMARTHOST": "127.0.0.1:1",
        "BILLINGWATCH_DIGEST_FROM": "a@example.com", "BILLINGWATCH_DIGEST_TO": "b@example.com",
        "BILLINGWATCH_DIGEST_AUTH_USERNAME": "user"})
    refused(result.stderr, result.returncode, setting)


def test_a_token_file_with_content_protects_the_api(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("token-from-a-file\n")
    with running_exporter(BILLINGWATCH_API_TOKEN_FILE=str(token)) as exporter:
        assert httpx.get(exporter.url + "/api/anomalies", timeout=10).status_code == 401
        authorised = httpx.get(exporter.url + "/api/anomalies", timeout=10,
                               headers={"Authorization": "Bearer token-from-a-file"})
        assert authorised.status_code == 200
