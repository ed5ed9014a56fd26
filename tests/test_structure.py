"""The package's shape: no import cycle, at most 8 floors, the key domain apart from Flask."""

import ast
import subprocess
from collections import defaultdict
from pathlib import Path

from bench.servers import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "livekit_auth"


def module_name(path: Path) -> str:
    """livekit_auth/admin/views.py as livekit_auth.admin.views; a package as its own name."""
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module of the package, and the modules of the package it imports.

    `from .. import keys` imports the module keys, not the package that holds it; a name that
    is not a module counts as an import of the module it comes from.
    """
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    found: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                target = f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                if target in modules and target != name:
                    found[name].add(target)
    return found


def test_no_module_of_the_package_imports_itself_back_through_others() -> None:
    graph = imports()
    assert graph["livekit_auth.admin.views"] >= {"livekit_auth.apikeys.services"}  # the reader sees imports
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target != "livekit_auth":  # the app factory imports everything, and nothing imports it
                visit(target, path + [target])

    for module in sorted(graph):
        visit(module, [module])
    assert cycles == []
    assert not any("livekit_auth" in targets for module, targets in graph.items() if module != "livekit_auth")


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each module's floor: 1 for one that imports no module of the package, else one above its highest import."""
    found: dict[str, int] = {}

    def floor(module: str) -> int:
        if module not in found:
            found[module] = 1 + max((floor(target) for target in graph[module]), default=0)
        return found[module]

    for module in list(graph):
        floor(module)
    return found


def test_the_package_stands_on_at_most_eight_floors() -> None:
    standing = floors(imports())
    assert standing["livekit_auth"] == max(standing.values()) <= 8
    assert standing["livekit_auth.apikeys.keys"] == 1


def flask_imports(path: Path) -> list[str]:
    """The modules of Flask and its extensions that a file imports."""
    tree = ast.parse(path.read_text())
    named = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    named += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and not node.level]
    return [name for name in named if name.split(".")[0] in {"flask", "flask_sqlalchemy", "flask_wtf", "werkzeug"}]


def test_the_key_domain_imports_neither_flask_nor_the_web_layer() -> None:
    domain = PACKAGE / "apikeys"
    assert {path.name: flask_imports(path) for path in domain.glob("*.py")} == {
        path.name: [] for path in domain.glob("*.py")
    }
    graph = imports()
    reached = {target for module, targets in graph.items() if module.startswith("livekit_auth.apikeys")
               for target in targets}
    below = {"livekit_auth.clock", "livekit_auth.config", "livekit_auth.metrics", "livekit_auth.rate_limits"}
    assert {module for module in reached if not module.startswith("livekit_auth.apikeys")} <= below
    assert flask_imports(PACKAGE / "rate_limits.py") == []


def test_make_run_installs_only_what_serving_needs(tmp_path) -> None:
    planned = subprocess.run(["make", "-n", "run", f"VENV={tmp_path / 'venv'}"], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert "-r requirements.txt" in planned and "requirements-dev.txt" not in planned
    tested = subprocess.run(["make", "-n", "test", f"VENV={tmp_path / 'venv'}"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True).stdout
    assert "-r requirements-dev.txt" in tested
