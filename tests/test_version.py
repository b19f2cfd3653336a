"""The version is written once (billingwatch/__init__.py): the installed metadata, `billingwatch
--version`, billingwatch_build_info, the changelog and the Kubernetes image tag all say it."""

import subprocess
import sys
import tomllib
from importlib.metadata import version

import yaml

import billingwatch
from billingwatch.metrics.build_info import BuildInfo
from tests.conftest import ROOT


def test_pyproject_reads_the_version_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "billingwatch.__version__"}
    # The installed metadata is what was built from it (reinstall after a version change: scripts/test.sh).
    assert version("billingwatch") == billingwatch.__version__


def test_billingwatch_version_prints_it() -> None:
    done = subprocess.run([sys.executable, "-m", "billingwatch", "--version"], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout == f"billingwatch {version('billingwatch')}\n"


def test_build_info_carries_it() -> None:
    [family] = BuildInfo("memory").collect()
    [sample] = family.samples
    assert sample.labels["version"] == version("billingwatch") and sample.labels["store"] == "memory"


def test_the_changelog_has_a_section_for_it_under_unreleased() -> None:
    headings = [line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")]
    assert headings[0] == "## [Unreleased]"
    assert headings[1].startswith(f"## [{billingwatch.__version__}] - ")


def test_the_kubernetes_base_names_the_image_of_this_version() -> None:
    kustomization = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "billingwatch", "newTag": billingwatch.__version__}]
