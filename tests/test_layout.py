"""Test and benchmark helpers stay out of what is shipped: bench/ imports nothing from tests/ (the
shared helpers live in testkit/), and the built wheel holds the billingwatch package only."""

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT
from tests.test_import_graph import imports


def imported_names(path: Path) -> set[str]:
    """The absolute module names a file imports, at any depth."""
    names: set[str] = set()
    for node in imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_bench_imports_nothing_from_tests() -> None:
    files = sorted((ROOT / "bench").glob("*.py"))
    assert len(files) > 5
    from_tests = {f.name: sorted(n for n in imported_names(f) if n == "tests" or n.startswith("tests."))
                  for f in files}
    assert {name: found for name, found in from_tests.items() if found} == {}
    assert "testkit.stack" in imported_names(ROOT / "bench" / "notify.py")  # the walk sees its imports


def test_the_wheel_ships_the_exporter_only(tmp_path: Path) -> None:
    # Built from a copy: the build writes build/ and egg-info next to its sources.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "exporter", source / "exporter",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "testkit", source / "testkit", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("billingwatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if name.endswith(".py")}
    assert packages == {"billingwatch"}
    assert "billingwatch/server.py" in names and "billingwatch/store/apply.lua" in names
    assert not [name for name in names if name.startswith(("billingwatch/testing/", "testkit/", "tests/"))]
    # The licence text travels with the wheel (PEP 639: License-File in METADATA, the file under licenses/).
    licence = next(name for name in names if name.endswith(".dist-info/licenses/LICENSE"))
    assert "MIT License" in zipfile.ZipFile(wheel).read(licence).decode()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata.splitlines()
