"""The Prometheus rules: rendered from the config, checked and unit-tested by the real promtool."""

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from billingwatch import levels
from billingwatch.config import ConfigError
from billingwatch.rules import RulesConfig, load_config, render_rules
from billingwatch.rules import config as rules_config
from billingwatch.rules.alerts import ALERTS, section
from billingwatch.rules.render import duration

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
RULE_FILE = RULES / "billingwatch.rules.yml"
UNIT_TESTS = sorted((RULES / "tests").glob("*.yml"))


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: scripts/test.sh installs it (Debian package prometheus)"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alerts(text: str) -> list[dict[str, object]]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"] if "alert" in rule]


def test_committed_rules_are_the_render_of_the_defaults() -> None:
    assert RULE_FILE.read_text() == render_rules(load_config()), (
        "rules/billingwatch.rules.yml differs from the config: run `billingwatch rules -o rules/billingwatch.rules.yml`"
    )


def test_committed_config_yml_is_generated_from_the_alert_modules() -> None:
    shipped = subprocess.run(
        [sys.executable, "-m", "billingwatch", "rules", "--print-defaults"], capture_output=True, text=True, check=True
    ).stdout
    packaged = ROOT / "exporter" / "billingwatch" / "rules" / "config.yml"
    assert (RULES / "config.yml").resolve() == packaged.resolve()  # rules/config.yml links to the packaged file
    assert packaged.read_text() == shipped, (
        "exporter/billingwatch/rules/config.yml differs from the alert modules: run "
        "`billingwatch rules --print-defaults > exporter/billingwatch/rules/config.yml`"
    )


def test_the_generated_defaults_load_as_the_modules_defaults() -> None:
    """config.yml's text round-trips: what it says is what each module's dataclass holds."""
    text = (RULES / "config.yml").read_text()
    assert load_config() == RulesConfig()
    defaults = yaml.safe_load(text)
    assert list(defaults) == ["selector", "livemode", "keep_labels", "runbook_url", "interval",
                              *(section(m) for m in ALERTS)]
    for module in ALERTS:  # each section under its module's comment
        assert f"# {module.COMMENT.splitlines()[-1]}\n{section(module)}:\n" in text, module.__name__
        assert all(f"# {line}" in text for line in module.COMMENT.splitlines()), module.__name__
    assert rules_config.PRIORITIES is levels.PRIORITIES  # priorities are defined once


def test_every_registered_alert_has_its_rule_runbook_and_promtool_test() -> None:
    """The contract of rules/alerts/: a new alert is its module, a promtool test and a runbook."""
    promtool_tests = {path.name: path.read_text() for path in UNIT_TESTS}
    registered = [module.ALERT for module in ALERTS]
    assert len(set(registered)) == len(registered)
    assert [str(rule["alert"]) for rule in alerts(RULE_FILE.read_text())] == registered
    for name in registered:
        assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file(), f"no docs/runbooks/{name}.md"
        assert any(name in text for text in promtool_tests.values()), f"no test in rules/tests/*.yml names {name}"


def test_promtool_checks_every_rule_file() -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in RULES.glob("*.rules.yml"))
    assert files == ["rules/billingwatch.rules.yml"]
    result = promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.fixture(scope="module")
def promtool_runs() -> Iterator[dict[Path, subprocess.Popen[str]]]:
    """Every unit-test file under promtool at once: each run is one single-threaded process, and
    they are most of this file's time (the growth tests evaluate 40 days hour by hour)."""
    exe = shutil.which("promtool")
    assert exe, "promtool not found: scripts/test.sh installs it (Debian package prometheus)"
    runs = {path: subprocess.Popen([exe, "test", "rules", path.name], cwd=path.parent, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for path in UNIT_TESTS}
    yield runs
    for run in runs.values():
        if run.poll() is None:
            run.kill()
        run.communicate()


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=[p.stem for p in UNIT_TESTS])
def test_promtool_unit_tests(unit_test: Path, promtool_runs: dict[Path, subprocess.Popen[str]]) -> None:
    output, _ = promtool_runs[unit_test].communicate(timeout=300)
    assert promtool_runs[unit_test].returncode == 0, output


def test_every_alert_is_labelled_linked_documented_and_unit_tested() -> None:
    tested = {
        case["alertname"]
        for path in UNIT_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    rules = alerts(RULE_FILE.read_text())
    assert len(rules) >= 12
    for rule in rules:
        name = str(rule["alert"])
        labels = rule["labels"]
        assert isinstance(labels, dict)
        assert labels["service"] == "billingwatch", name  # one matcher routes every BillingWatch alert
        if set(labels) != {"service"}:
            assert set(labels) == {"detector", "severity", "priority", "service"}, name
            assert labels["severity"] == {"P1": "critical", "P2": "warning", "P3": "warning",
                                          "P4": "info"}[str(labels["priority"])], name
        else:  # the generic rule: detector, severity and priority come from the anomaly series itself
            assert "by (detector, severity, priority, livemode" in str(rule["expr"]), name
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert str(annotations["runbook_url"]).endswith(f"/docs/runbooks/{name}.md"), name
        runbook = ROOT / "docs" / "runbooks" / f"{name}.md"
        assert runbook.is_file(), f"no runbook for {name}"
        assert "Stripe" in runbook.read_text(), f"{runbook} does not say how to confirm it in Stripe"
        assert name in tested, f"no promtool test where {name} fires"


CUSTOM_TEST = """
rule_files: [billingwatch.rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'billingwatch_charge_outcomes_total{job="payments",status="failed",livemode="true"}'
        values: '0+FAILEDx120'
      - series: 'billingwatch_charge_outcomes_total{job="payments",status="succeeded",livemode="true"}'
        values: '0+SUCCEEDEDx120'
    alert_rule_test:
      - eval_time: 70m
        alertname: BillingChargeFailureSpike
        exp_alerts: EXPECTED
"""

FIRING = """
          - exp_labels: {detector: charge_failure_spike, severity: critical, priority: P1, service: billingwatch,
                         livemode: "true", job: payments}
            exp_annotations:
              summary: 40% of charges failed in the last 1h
              description: >-
                40% of charges (livemode=true) failed in the last 1h, above the 30% threshold
                (counted from 20 charges up). Card testing, a broken checkout or a processor outage.
              runbook_url: https://wiki.example.com/billing/BillingChargeFailureSpike.md"""


def test_a_changed_threshold_yields_rules_that_fire_at_the_new_value(tmp_path: Path) -> None:
    config = tmp_path / "my.yml"
    config.write_text(
        'selector: job="payments"\n'
        "runbook_url: https://wiki.example.com/billing/\n"
        "charge_failure_spike:\n  ratio: 0.30\n  priority: P1\n"
    )
    out = tmp_path / "billingwatch.rules.yml"
    subprocess.run(
        [sys.executable, "-m", "billingwatch", "rules", "--config", str(config), "-o", str(out)], check=True
    )
    assert promtool("check", "rules", str(out)).returncode == 0
    cases = {
        "fires_at_40_percent": ("2", "3", FIRING),  # 40% > the new 30%
        "quiet_at_25_percent": ("1", "3", " []"),  # 25% would fire at the default 15%
    }
    for name, (failed, succeeded, expected) in cases.items():
        test = tmp_path / f"{name}.yml"
        test.write_text(
            CUSTOM_TEST.replace("FAILED", failed).replace("SUCCEEDED", succeeded).replace(" EXPECTED", expected)
        )
        result = promtool("test", "rules", test.name, cwd=tmp_path)
        assert result.returncode == 0, name + "\n" + result.stdout + result.stderr
    # The same 25% does fire with the default rules: the quiet case above is the new threshold's doing.
    default = tmp_path / "default"
    default.mkdir()
    (default / "billingwatch.rules.yml").write_text(render_rules(load_config()))
    test = default / "default_fires_at_25_percent.yml"
    test.write_text(CUSTOM_TEST.replace("payments", "billingwatch").replace("FAILED", "1").replace("SUCCEEDED", "3")
                    .replace(" EXPECTED", " []"))
    result = promtool("test", "rules", test.name, cwd=default)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and 'summary="25% of charges failed in the last 1h"' in output, output


def test_a_partial_config_keeps_every_other_default(tmp_path: Path) -> None:
    config = tmp_path / "my.yml"
    config.write_text("fraud_spike:\n  max_disputes: 3\nlivemode: 'true'\n")
    loaded = load_config(str(config))
    defaults = load_config()
    assert loaded.fraud_spike.max_disputes == 3
    assert loaded.fraud_spike.dispute_ratio == defaults.fraud_spike.dispute_ratio == 0.01
    assert loaded.charge_failure_spike == defaults.charge_failure_spike
    assert loaded.matchers('status="failed"') == '{job="billingwatch",livemode="true",status="failed"}'
    rendered = render_rules(loaded)
    assert "increase24h >= 3" in rendered
    assert 'up{job="billingwatch"}' in rendered  # target metrics carry no livemode label


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("charge_failure_spike:\n  ratoi: 0.2\n", "charge_failure_spike: unknown key(s) ratoi"),
        ("charge_failure_spike:\n  window: 1 hour\n", "charge_failure_spike.window: not a Prometheus duration"),
        ("fraud_spike:\n  priority: P5\n", "fraud_spike.priority: priority must be one of P1, P2, P3, P4"),
        ("fraud_spike:\n  severity: warning\n", "fraud_spike.severity: write priority: P1..P4 instead"),
        ("fraud_spike:\n  severity: high\n  priority: P2\n", "fraud_spike: give priority only"),
        ("webhook_lag:\n  min_events: -1\n", "webhook_lag.min_events: expected a whole number >= 0"),
        ("livemode: yes\n", "livemode"),
        ("- a list\n", "expected a mapping at the top level"),
        ("selector: ''\n", "selector must pick the BillingWatch targets"),
    ],
)
def test_a_bad_config_is_refused_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.yml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.yml") as info:
        load_config(str(config))
    assert message in str(info.value)
    result = subprocess.run(
        [sys.executable, "-m", "billingwatch", "rules", "--config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_the_former_severity_key_is_read_as_its_priority(tmp_path: Path) -> None:
    former, current = tmp_path / "former.yml", tmp_path / "current.yml"
    former.write_text("fraud_spike:\n  severity: high\nwebhook_lag:\n  severity: critical\n")
    current.write_text("fraud_spike:\n  priority: P2\nwebhook_lag:\n  priority: P1\n")
    assert load_config(str(former)).fraud_spike.priority == "P2"
    assert render_rules(load_config(str(former))) == render_rules(load_config(str(current)))
    fraud = next(r for r in alerts(render_rules(load_config(str(former)))) if r["alert"] == "BillingFraudSpike")
    assert fraud["labels"] == {"detector": "fraud_spike", "severity": "warning", "priority": "P2",
                               "service": "billingwatch"}


def test_durations_render_as_prometheus_durations() -> None:
    assert [duration(s) for s in (8 * 86400, 5400, 86400 + 60, 30, 0)] == ["8d", "1h30m", "1d1m", "30s", "0s"]


def test_baseline_alerts_wait_for_a_whole_baseline_and_count_alerts_read_currency_free_families() -> None:
    """The gates of rules/tests/warmup.yml, rendered from a custom config: the offsets follow
    the configured window and baseline."""
    rules = {str(r["alert"]): str(r["expr"]) for r in alerts(RULE_FILE.read_text())}
    assert "present_over_time(billingwatch_charge_amount_total" in rules["BillingRevenueDrop"]
    assert "[1h] offset 8d)" in rules["BillingRevenueDrop"] and "[1h] offset 1d)" in rules["BillingRevenueDrop"]
    assert "present_over_time(billingwatch_mrr_amount{job=\"billingwatch\"}[1h] offset 7d)" in rules["BillingMRRDrop"]
    assert "offset 8d" in rules["BillingEarlyFraudWarningsRising"]
    for name in ("BillingChargeFailureSpike", "BillingFraudSpike"):
        assert "currency" not in rules[name] and "billingwatch_charges:" not in rules[name], name
    assert "billingwatch_charge_outcomes" in rules["BillingChargeFailureSpike"]
    defaults = load_config()
    custom = replace(defaults, revenue_drop=replace(defaults.revenue_drop, window="12h", baseline="14d"))
    rendered = render_rules(custom)
    revenue = next(str(r["expr"]) for r in alerts(rendered) if r["alert"] == "BillingRevenueDrop")
    assert "offset 12h)" in revenue and "offset 14d12h)" in revenue


def test_growth_alerts_wait_for_whole_windows_and_ratios_never_divide_by_zero() -> None:
    """The gates of rules/tests/growth.yml follow the configured windows; every growth ratio
    divides by a `> 0` guarded denominator (no 0/0 or x/0 sample reaches a panel or an alert)."""
    rules = {str(r["alert"]): str(r["expr"]) for r in alerts(RULE_FILE.read_text())}
    churn = rules["BillingChurnSpike"]
    assert 'present_over_time(billingwatch_mrr_movement_amount_total{job="billingwatch",kind="churn"}[1h] offset 7d)' \
        in churn and "billingwatch_mrr_amount{job=\"billingwatch\"} offset 7d) > 0)" in churn
    assert "present_over_time(billingwatch_trials_ended_total{job=\"billingwatch\"}[1h] offset 35d)" \
        in rules["BillingTrialConversionDrop"]
    defaults = load_config()
    custom = replace(defaults, churn_spike=replace(defaults.churn_spike, window="14d"),
                     trial_conversion_drop=replace(defaults.trial_conversion_drop, window="14d", baseline="8w"))
    rendered = {str(r["alert"]): str(r["expr"]) for r in alerts(render_rules(custom))}
    assert "[1h] offset 14d)" in rendered["BillingChurnSpike"] and "increase14d" in rendered["BillingChurnSpike"]
    assert "[1h] offset 70d)" in rendered["BillingTrialConversionDrop"]
    assert "conversion_ratio14d_avg8w" in rendered["BillingTrialConversionDrop"]
    records = {str(r["record"]): str(r["expr"]) for g in yaml.safe_load(RULE_FILE.read_text())["groups"]
               for r in g["rules"] if "record" in r}
    ratios = [name for name in records if "ratio" in name and not name.endswith("_avg28d")]
    ratios.append("currency_livemode:billingwatch_mrr_amount:per_paying_customer")
    assert len(ratios) == 4
    for name in ratios:
        assert records[name].rstrip().endswith("> 0)"), name
