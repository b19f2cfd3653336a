"""An earlier release of BillingWatch from this repository's history, installed into a venv of its
own, run as a real exporter process beside the current one (rolling updates, in-place migration)."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx

from testkit.processes import Exporter, wait_until
from tests.conftest import ROOT

PREVIOUS = "886d805"  # the release before store layouts were versioned (layout 1)
MOVEMENTS = "2820652"  # the first release with revenue movements: subscription hashes of another shape


def install(commit: str, directory: Path) -> Path:
    """The release at `commit` in a venv under `directory`; returns its python. Its dependencies
    are this venv's (a .pth file), its billingwatch its own: installed into its site-packages,
    which come before the .pth's path."""
    src, venv = directory / "src", directory / "venv"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "current-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-build-isolation", str(src)], check=True, capture_output=True)
    return python


class ReleaseExporter(Exporter):
    """`billingwatch serve` of an installed release (its own python), from a directory outside the
    repository so the current sources are not on its path."""

    def __init__(self, python: Path, env: dict[str, str], port: int) -> None:
        super().__init__(env, port)
        self.python = python

    def start(self, *extra: str) -> None:
        args = [str(self.python), "-m", "billingwatch", "serve", "--port", str(self.port), *extra]
        self.process = subprocess.Popen(args, env=self.env, cwd=self.python.parent, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        wait_until(lambda: httpx.get(self.url + "/health", timeout=1).status_code == 200,
                   what=f"billingwatch serve ({self.python}) on {self.port}")
