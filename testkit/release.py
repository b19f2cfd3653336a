"""An earlier release of BillingWatch from this repository's history, installed into a venv of its
own (tests/old_release.py runs it beside the current exporter; bench/replay_release.py times it)."""

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def install(commit: str, directory: Path) -> Path:
    """The release at `commit` in a venv under `directory`; returns its python. Its dependencies
    are this venv's (a .pth file), its billingwatch its own: installed into its site-packages,
    which come before the .pth's path. A dependency the release has and this checkout dropped
    (aiohttp before issue 27) is installed into its venv alone, from the package index."""
    src, venv = directory / "src", directory / "venv"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "current-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Without --no-deps: pip, run for that interpreter, sees this venv's packages through the .pth
    # and installs only what is missing there.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-build-isolation", str(src)], check=True, capture_output=True)
    return python
