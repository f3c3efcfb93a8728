"""Check the package's shape: module sizes, modules per folder, imports that point up a layer, import cycles.

    python tools/check_layers.py

Every import in faceverify/ (module level or inside a function) is read with ``ast``. Layers, lowest first:
helpers, the front end, decisions and the gallery, the Python API and evaluation, video and training, the CLI.
A module may import its own layer or lower ones, and the graph of modules must have no cycle. Exits 1 and lists
what is wrong, else prints a one-line summary.
"""

from __future__ import annotations

import ast
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "faceverify"
MAX_LINES = 450
MAX_MODULES = 12
LAYERS = [
    ("errors", "_util", "configs"),
    ("images", "modelcard", "networks", "mtcnn", "yunet"),
    ("detect", "align", "embed", "quality", "liveness"),
    ("pipeline", "decision", "gallery"),
    ("api", "eval", "metrics"),
    ("video", "train", "adapt"),
    ("cli", "service", "__init__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def imports_of(path: Path, module: str) -> set[str]:
    """The faceverify modules that ``path`` imports, resolved to module names."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("faceverify")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("faceverify"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}
    return found


def main() -> int:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f): f for f in files}
    problems = []
    for f in files:
        lines = len(f.read_text().splitlines())
        if lines > MAX_LINES:
            problems.append(f"{f.relative_to(PACKAGE.parent)}: {lines} lines (most {MAX_LINES})")
    for folder in {f.parent for f in files}:
        count = len(list(folder.glob("*.py")))
        if count > MAX_MODULES:
            problems.append(f"{folder.relative_to(PACKAGE.parent)}: {count} modules (most {MAX_MODULES})")
    graph: dict[str, set[str]] = {}
    for name, f in modules.items():
        deps = {m for m in imports_of(f, name) if m in modules and m not in (name, "faceverify")}
        graph[name] = deps
        for dep in deps:
            if dep != "faceverify" and layer_of(dep) > layer_of(name) and not dep.startswith(name + "."):
                problems.append(f"{name} imports {dep}, a higher layer")
    try:
        TopologicalSorter(graph).static_order().__iter__().__next__()
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        problems.append(f"import cycle: {' -> '.join(exc.args[1])}")
    if problems:
        print("\n".join(problems))
        return 1
    edges = sum(len(d) for d in graph.values())
    print(f"{len(modules)} modules, {edges} imports: none over {MAX_LINES} lines, no folder over {MAX_MODULES} "
          f"modules, no import up a layer, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
