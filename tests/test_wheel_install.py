"""The install the image makes (Dockerfile), in an empty venv: requirements/runtime.lock with
--require-hashes, then the built wheel with --no-deps; it runs, and imports every module of the
package with the runtime dependencies alone (no test extra). pip fetches from its cache or PyPI."""

import shutil
import subprocess
import sys
from pathlib import Path

from billingwatch import __version__
from tests.conftest import ROOT

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, billingwatch
names = [m.name for m in pkgutil.walk_packages(billingwatch.__path__, "billingwatch.")
         if m.name != "billingwatch.__main__"]  # runs the CLI
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def run(*args: str | Path, timeout: float = 600) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def test_the_wheel_and_the_runtime_lock_install_with_hashes_into_an_empty_venv(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "exporter", source / "exporter", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "-w", tmp_path / "dist", source)
    [wheel] = (tmp_path / "dist").glob("billingwatch-*.whl")
    assert wheel.name == f"billingwatch-{__version__}-py3-none-any.whl"

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
    run(*pip, "--require-hashes", "-r", ROOT / "requirements" / "runtime.lock")
    run(*pip, "--no-deps", wheel)
    assert "No broken requirements found" in run(venv / "bin" / "python", "-m", "pip", "check")

    assert run(venv / "bin" / "billingwatch", "--version") == f"billingwatch {__version__}\n"
    assert int(run(venv / "bin" / "python", "-c", IMPORT_EVERY_MODULE, timeout=120)) > 50
    for test_only in ("pytest", "hypothesis", "grafanalib"):
        probe = subprocess.run([venv / "bin" / "python", "-c", f"import {test_only}"], capture_output=True)
        assert probe.returncode != 0, f"{test_only} came with the runtime lock"
