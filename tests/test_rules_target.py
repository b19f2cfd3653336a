"""`billingwatch rules --job` and `--label`: the rules select the user's scrape job, and the
PrometheusRule carries the labels their Prometheus Operator selects on."""

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from billingwatch.cli import main
from billingwatch.config import ConfigError
from billingwatch.rules import load_config, render_rules
from billingwatch.rules.target import metadata_labels, with_job


def test_job_replaces_the_selectors_job_and_keeps_its_other_matchers() -> None:
    defaults = load_config()
    assert with_job(defaults, "payments").selector == 'job="payments"'
    scoped = replace(defaults, selector='namespace="pay", job = "billingwatch"')
    assert with_job(scoped, "bw").selector == 'namespace="pay", job="bw"'
    assert with_job(replace(defaults, selector='namespace="pay"'), "bw").selector == 'job="bw",namespace="pay"'


def test_job_renders_the_rules_a_config_with_that_selector_renders(tmp_path: Path) -> None:
    config = tmp_path / "my.yml"
    config.write_text("selector: 'job=\"payments\"'\n")
    from_flag = render_rules(with_job(load_config(), "payments"))
    assert from_flag.split("\n", 1)[1] == render_rules(load_config(str(config))).split("\n", 1)[1]
    assert 'job="billingwatch"' not in from_flag and 'up{job="payments"}' in from_flag


@pytest.mark.parametrize("job", ['a"b', "a\\b", "a\nb", ""])
def test_a_job_that_cannot_be_a_matcher_is_refused(job: str) -> None:
    with pytest.raises(ConfigError, match="--job"):
        with_job(load_config(), job)


def test_labels_are_checked_against_kubernetes_label_syntax() -> None:
    assert metadata_labels(["release=kube-prometheus-stack", "app.kubernetes.io/part-of=billing", "team="]) == {
        "release": "kube-prometheus-stack", "app.kubernetes.io/part-of": "billing", "team": ""}
    for bad in ("release", "bad key=x", "-lead=x", "x=" + "v" * 64, "k=bad value", "Prefix.Upper/x=y", "k" * 64 + "=v"):
        with pytest.raises(ConfigError, match="--label"):
            metadata_labels([bad])


def test_the_cli_puts_the_labels_on_the_prometheusrule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rule.yaml"
    assert main(["rules", "--format", "prometheusrule", "--job", "bw", "--label", "release=kube-prometheus-stack",
                 "--label", "team=billing", "-o", str(out)]) == 0
    rule = yaml.safe_load(out.read_text())
    assert rule["metadata"]["labels"] == {"app.kubernetes.io/name": "billingwatch",
                                          "release": "kube-prometheus-stack", "team": "billing"}
    assert 'up{job="bw"}' in out.read_text()
    # A label on a plain rule file has nowhere to go: refused, one line, no traceback.
    assert main(["rules", "--label", "release=x"]) == 2
    assert main(["rules", "--format", "prometheusrule", "--label", "release=not ok"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "only with --format prometheusrule" in err and "Traceback" not in err
