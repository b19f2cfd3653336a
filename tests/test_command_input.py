"""Issue 23 d: hostile input to the commands gives a reported line or a one-line error, never a
traceback. Real processes: `billingwatch replay` against a real exporter and a real redis-server,
`digest` and `serve` argument checks."""

import json
import sys
from pathlib import Path

import pytest

from billingwatch.fixtures import stripe_events as se
from tests.conftest import running_exporter
from tests.metrics import scrape, total
from tests.replay_helpers import billingwatch

# Each nests deeper than the parser's stack (RecursionError), or just within it.
DEEP_LINES = ["[" * 100_000, "{\"a\":" * 50_000, "[" * (sys.getrecursionlimit() - 50) + "]" * (
    sys.getrecursionlimit() - 50)]


def hostile_file(tmp_path: Path) -> tuple[Path, int]:
    """Good events around the deep lines: every one after them must still be sent."""
    good = [json.dumps(se.event("charge.succeeded", se.charge(customer=f"cus_deep{i}"))) for i in range(4)]
    lines = [good[0], *DEEP_LINES, good[1], good[2], "[" * 100_000, good[3]]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, len(good)


def check_report(stdout: str, stderr: str, returncode: int, accepted: int) -> None:
    assert "Traceback" not in stderr and "RecursionError" not in stderr, stderr[-2000:]
    assert returncode == 1
    rejected = len(DEEP_LINES) + 1
    assert f"{accepted} accepted, 0 duplicate, {rejected} rejected, 0 failed" in stdout
    assert "hostile.jsonl:2: rejected: JSON nested too deeply" in stderr
    assert "hostile.jsonl:7: rejected: JSON nested too deeply" in stderr
    assert "hostile.jsonl:4: rejected: " in stderr  # nested within the stack: the exporter refuses it


def test_replay_over_http_skips_deeply_nested_lines_with_their_number(tmp_path: Path) -> None:
    path, good = hostile_file(tmp_path)
    with running_exporter() as exporter:
        result = billingwatch("replay", str(path), "--url", exporter.url)
        check_report(result.stdout, result.stderr, result.returncode, good)
        assert total(scrape(exporter.url), "billingwatch_history_events_total") == good


def test_replay_direct_skips_deeply_nested_lines_with_their_number(tmp_path: Path, redis_url: str,
                                                                   redis_prefix: str) -> None:
    path, good = hostile_file(tmp_path)
    result = billingwatch("replay", "--direct", str(path),
                          env={"REDIS_URL": redis_url, "BILLINGWATCH_REDIS_PREFIX": redis_prefix})
    check_report(result.stdout, result.stderr, result.returncode, good)


@pytest.mark.parametrize("at", ["nan", "inf", "-inf", "1e300", "-1", "253402300800", "NaN"])
def test_digest_at_out_of_range_is_a_one_line_error(at: str) -> None:
    result = billingwatch("digest", "--stdout", f"--at={at}", "--prometheus-url", "http://127.0.0.1:1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("billingwatch: --at must be")


@pytest.mark.parametrize("port", ["0", "70000", "-1", "65536", "0000080000"])
def test_serve_port_out_of_range_is_a_one_line_usage_error(port: str) -> None:
    result = billingwatch("serve", f"--port={port}", timeout=30)
    assert result.returncode == 2, result.stderr
    assert "argument --port: must be a port number from 1 to 65535" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("text", "reason"), [
    ("[" * 100_000, "nested too deeply"),  # PyYAML recursed into a RecursionError traceback
    ("a: " * 3000 + "1", "mapping values are not allowed here (line 1, column 5)"),  # was 4 lines
    ("a: [1, 2\n", "(line 2, column 1)"),
])
def test_rules_config_that_is_no_yaml_is_a_one_line_error(tmp_path: Path, text: str, reason: str) -> None:
    config = tmp_path / "rules.yml"
    config.write_text(text)
    result = billingwatch("rules", "--config", str(config))
    assert result.returncode == 2, result.stderr[-500:]
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"billingwatch: {config}: not valid YAML: ")
    assert reason in result.stderr
