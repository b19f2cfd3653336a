"""prometheus/scrape-billingwatch.yml as a user pastes it into their prometheus.yml: promtool
accepts the config with it and the rules, and a real Prometheus scrapes a real exporter with it
so the rules (which select the job by name) see the exporter, under the default job name and
under another one the rules were rendered for (`billingwatch rules --job`)."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from billingwatch.rules import load_config, render_rules
from billingwatch.rules.target import with_job
from testkit.stack import prometheus
from tests.conftest import ROOT, running_exporter

SNIPPET = ROOT / "prometheus" / "scrape-billingwatch.yml"
RULES = ROOT / "rules" / "billingwatch.rules.yml"


def snippet_jobs() -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = yaml.safe_load(SNIPPET.read_text())["scrape_configs"]
    return jobs


def test_the_snippet_is_one_job_named_as_the_default_rules_select() -> None:
    (job,) = snippet_jobs()
    assert job["job_name"] == "billingwatch"
    assert 'job="billingwatch"' in RULES.read_text()


def test_promtool_accepts_a_config_holding_the_snippet_and_the_rules(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "scrape_configs": snippet_jobs()}))
    exe = shutil.which("promtool")
    assert exe, "promtool not found (Debian package prometheus)"
    result = subprocess.run([exe, "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr and "rules found" in result.stdout + result.stderr


@pytest.mark.parametrize("job", ["billingwatch", "payments-billing"])
def test_prometheus_scrapes_the_exporter_with_the_snippet_and_the_rules_select_it(tmp_path: Path, job: str) -> None:
    override = tmp_path / "rules-config.yml"
    override.write_text("interval: 1s\n")
    config = load_config(str(override))
    rules = tmp_path / "billingwatch.rules.yml"
    rules.write_text(render_rules(with_job(config, job) if job != "billingwatch" else config))
    with running_exporter() as exporter:
        (entry,) = snippet_jobs()
        pasted = {**entry, "job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}
        with prometheus(tmp_path / "prometheus", [], rule_files=[rules], scrape_configs=[pasted]) as prom:
            prom.wait_for(f'up{{job="{job}"}} == 1')
            # A recording rule reads the exporter through the rules' selector: it has samples
            # only when the rules select the snippet's job.
            recorded = prom.wait_for("livemode_status:billingwatch_charge_outcomes:increase1h")
            assert {r["metric"]["job"] for r in recorded} == {job}
            # The exporter-down rule sees its target (no absent() series for a job it cannot find).
            down = f'up{{job="{job}"}} == 0 or absent(up{{job="{job}"}})'
            assert prom.query(down) == []
