"""No import circles inside the package: an AST walk over exporter/billingwatch (no import runs).

Every `import` and `from ... import` counts, at module level and inside functions (a function-level
import is a circle put off until run time, not a circle removed). Excluded: imports under
`if TYPE_CHECKING:`, which never run (annotations only). `from a import b` is an edge to the module
a.b when b is a submodule, else to a; importing a.b is not counted as importing its package a (every
import of a submodule runs its package's __init__, so counting it would make each registry that imports
its own modules a circle).
"""

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "exporter" / "billingwatch"


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name → file, for every .py under `package`."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in `tree`, at any depth, except the body of `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _type_checking_only(child):
            for other in child.orelse:
                yield from imports(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from imports(child)


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` (at `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [[alias.name] for alias in node.names]
        else:
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # `from a import b`: the submodule a.b if there is one, else a itself.
            candidates = [[f"{source}.{alias.name}", source] for alias in node.names]
        for options in candidates:
            for option in options:
                while option and option not in known:  # `import a.b.c` of a module inside a package
                    option = option.rpartition(".")[0]
                if option:
                    targets.add(option)
                    break
    targets.discard(name)
    return targets


def import_graph(package: Path) -> dict[str, set[str]]:
    known = modules(package)
    return {name: imported(name, path, known) for name, path in known.items()}


def circle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of `graph` (first module repeated at the end), or [] when there is none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return list(error.args[1])
    return []


def test_the_walk_sees_the_package_imports() -> None:
    graph = import_graph(PACKAGE)
    # A module-level import, and `from package import module` (the registry importing its alerts).
    assert "billingwatch.http.app" in graph["billingwatch.server"]
    assert "billingwatch.http.app" in graph["billingwatch.http.openapi_default"]
    assert "billingwatch.rules.config" in graph["billingwatch.notify.alertmanager"]  # inside a function
    assert "uvicorn" not in graph["billingwatch.commands.serve"]  # outside the package: not a node
    assert "billingwatch.rules.alerts.anomaly" in graph["billingwatch.rules.alerts"]
    # The TYPE_CHECKING-only import of the detectors by the plan is left out.
    assert "billingwatch.detectors" not in graph["billingwatch.recording.plan"]


def test_a_circle_is_found() -> None:
    found = circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert set(found) == {"a", "b", "c"} and len(found) == 4 and found[0] == found[-1]
    assert circle({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_inside_the_package() -> None:
    found = circle(import_graph(PACKAGE))
    assert not found, "import circle: " + " -> ".join(reversed(found))
