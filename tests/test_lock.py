"""requirements/*.lock (scripts/lock.sh) satisfy pyproject.toml: every requirement, and every
requirement of the extras it asks for, pinned with hashes at a version its specifier admits."""

import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

# A pin as uv writes it: `name==version \` then one `--hash=sha256:...` line per file.
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.M)
# The locks are for CPython 3.11 on Linux (scripts/lock.sh), whatever machine reads them.
ENVIRONMENT = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.0",
               "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}


def pins(path: Path) -> dict[str, tuple[Version, str]]:
    """Package → (version, its hash lines) of a lock file."""
    text = path.read_text()
    found = {canonicalize_name(name): (Version(version), hashes) for name, version, hashes in PIN.findall(text)}
    assert len(found) == text.count("=="), f"{path.name}: a pin without hashes"
    return found


def requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return [req for req in map(Requirement, listed) if req.marker is None or req.marker.evaluate(ENVIRONMENT)]


def unmet(wanted: list[Requirement], locked: dict[str, tuple[Version, str]]) -> list[str]:
    problems = []
    for req in wanted:
        pinned = locked.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req}: not in the lock")
        elif not req.specifier.contains(pinned[0], prereleases=True):
            problems.append(f"{req}: the lock pins {pinned[0]}")
    return problems


def extras_requirements(req: Requirement, locked: dict[str, tuple[Version, str]]) -> list[Requirement]:
    """What `req`'s extras add, read from the installed distribution (the version the lock pins:
    scripts/test.sh installs requirements/test.lock)."""
    try:
        installed = distribution(req.name)
    except PackageNotFoundError:
        pytest.fail(f"{req.name} is not installed: install requirements/test.lock (scripts/test.sh)")
    pinned = locked[canonicalize_name(req.name)][0]
    assert Version(installed.version) == pinned, (
        f"installed {req.name} {installed.version}, the lock pins {pinned}: install requirements/test.lock")
    added = []
    for text in installed.requires or []:
        dependency = Requirement(text)
        marker = dependency.marker
        if marker is not None and any(marker.evaluate({**ENVIRONMENT, "extra": extra}) for extra in req.extras) \
                and not marker.evaluate({**ENVIRONMENT, "extra": ""}):
            added.append(dependency)
    return added


@pytest.mark.parametrize(("lock", "extra"), [("runtime.lock", None), ("test.lock", "test")])
def test_the_lock_pins_every_requirement_of_pyproject_at_an_admitted_version(lock: str, extra: str | None) -> None:
    locked = pins(ROOT / "requirements" / lock)
    wanted = requirements(extra)
    assert unmet(wanted, locked) == [], "run scripts/lock.sh"
    with_extras = [req for req in wanted if req.extras]
    assert {req.name for req in with_extras} >= {"uvicorn", "redis"}  # uvicorn[standard], redis[hiredis]
    for req in with_extras:
        added = extras_requirements(req, locked)
        assert added, f"{req}: its extras add nothing?"
        assert unmet(added, locked) == [], f"{req}'s extras; run scripts/lock.sh"


def test_the_test_lock_keeps_every_runtime_pin_and_its_hashes() -> None:
    runtime, test = pins(ROOT / "requirements" / "runtime.lock"), pins(ROOT / "requirements" / "test.lock")
    assert {name: test.get(name) for name in runtime} == runtime
    assert "pytest" in test and "pytest" not in runtime


def test_the_lock_check_sees_a_version_outside_the_range() -> None:
    locked = {"starlette": (Version("2.0.0"), ""), "uvicorn": (Version("0.55.0"), "")}
    assert unmet([Requirement("starlette>=0.37,<2"), Requirement("uvicorn>=0.29,<0.56"), Requirement("redis>=5")],
                 locked) == ["starlette<2,>=0.37: the lock pins 2.0.0", "redis>=5: not in the lock"]


def test_the_image_and_ci_install_the_locks_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r /tmp/runtime.lock" in dockerfile
    assert "--no-deps /wheels/billingwatch-" in dockerfile
    # Every file the Dockerfile copies from the build context gets past .dockerignore (`*` then `!path`).
    admitted = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.startswith("!")}
    copied = {source for line in dockerfile.splitlines() if line.startswith("COPY ") and "--from=" not in line
              for source in line.split()[1:-1]}
    assert copied and copied <= admitted, copied - admitted
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert "--require-hashes -r requirements/test.lock" in test_sh and "--no-deps -e ." in test_sh
