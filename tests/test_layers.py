"""The package's structure is what docs/design.md says: layers that import only downwards, no
import circle, no module much over 600 lines, and every module in the design's table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "s3pvefs"
# Lowest first: a module may import modules of its own rank or lower, never higher.
RANKS = {
    "errors": 0, "names": 0, "checksums": 0,
    "config": 1, "logsetup": 1,
    "store": 2,
    "state": 3,
    "transfer": 4,
    "fs": 5,
    "adapter": 6,
    "service": 7,
    "cli": 8, "bench": 8, "__main__": 9, "__init__": 0,
}
LONGEST = 650  # lines; a module past ~600 has grown a second job


def modules() -> dict[str, Path]:
    """Dotted name below s3pvefs -> file."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """The s3pvefs modules (dotted, below s3pvefs) that ``name`` imports, anywhere in it."""
    package = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("s3pvefs"):
                target = node.module[len("s3pvefs."):] if node.module != "s3pvefs" else ""
            else:
                continue
            for alias in node.names:  # `from s3pvefs.fs import core` imports a module
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("s3pvefs."):
                    found.add(alias.name[len("s3pvefs."):])
    return {module for module in found if module in MODULES and module != name}


def rank(module: str) -> int:
    return RANKS[module.split(".")[0]]


MODULES = modules()
GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    assert {module.split(".")[0] for module in MODULES} <= set(RANKS)


def test_layers_import_only_downwards() -> None:
    upwards = sorted(f"{name} -> {target}" for name, targets in GRAPH.items()
                     for target in targets if rank(target) > rank(name))
    assert not upwards


def test_no_import_circle() -> None:
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for target in GRAPH[start]:
            if target == goal or (target not in seen and not seen.add(target)
                                  and reaches(target, goal, seen)):
                return True
        return False

    circles = sorted(name for name in GRAPH if reaches(name, name, set()))
    assert not circles


def test_no_module_has_grown_a_second_job() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > LONGEST}
    assert not long


def test_the_design_lists_every_module_once() -> None:
    design = (REPO / "docs" / "design.md").read_text()
    section = design.split("## Layers", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([\w/]+\.py)`", section, re.MULTILINE)
    files = sorted(path.relative_to(PACKAGE).as_posix() for path in MODULES.values()
                   if path.name != "__init__.py" and "bench" not in path.parts)
    assert sorted(listed) == files
