"""The package's shape: its modules import each other without a cycle."""

import ast
from collections import defaultdict
from pathlib import Path

from .support import PROJECT_ROOT

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
    assert graph["livekit_auth.admin.views"] >= {"livekit_auth.auth.services"}  # the reader sees imports
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
