"""An earlier release of BillingWatch from this repository's history, installed into a venv of its
own, run as a real exporter process beside the current one (rolling updates, in-place migration)."""

import subprocess
from pathlib import Path

import httpx

from testkit.processes import Exporter, wait_until
from testkit.release import install

__all__ = ["MOVEMENTS", "PREVIOUS", "ReleaseExporter", "install"]

PREVIOUS = "886d805"  # the release before store layouts were versioned (layout 1)
MOVEMENTS = "2820652"  # the first release with revenue movements: subscription hashes of another shape


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
