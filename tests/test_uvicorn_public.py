"""Issue 26: the package uses no private uvicorn protocol. uvicorn's protocol classes
(`uvicorn.protocols.*`, with STATUS_LINE and the callbacks a subclass overrides) change between
releases; the request limits use uvicorn's public options instead (http/limits.py).

An AST scan of exporter/billingwatch (no import runs): every import statement, and every string
constant, since uvicorn also loads `--http module:Class` from a string."""

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "exporter" / "billingwatch"
PRIVATE = "uvicorn.protocols"


def private_uses(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, name) of each import of, or string naming, uvicorn.protocols or a module under it."""
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value.strip()]
        private = [name for name in names if name == PRIVATE or name.startswith((PRIVATE + ".", PRIVATE + ":"))]
        if private:
            yield node.lineno, private[0]


def test_the_scan_finds_each_way_of_naming_the_private_protocols() -> None:
    source = ("import uvicorn.protocols.http.h11_impl\n"
              "from uvicorn.protocols.http.httptools_impl import STATUS_LINE\n"
              "from uvicorn import protocols\n"
              "uvicorn.run(app, http='uvicorn.protocols.http.h11_impl:H11Protocol')\n"
              "import uvicorn\nfrom uvicorn.config import Config\nuvicorn.run(app, http='h11')\n")
    assert [line for line, _ in private_uses(ast.parse(source))] == [1, 2, 3, 4]


def test_the_package_imports_no_private_uvicorn_protocol() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the scan reads the package, not an empty directory
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
             for path in files for line, name in private_uses(ast.parse(path.read_text(), str(path)))]
    assert found == []
