"""Cycles in apiexec's import graph.

Edges are module-level imports between apiexec modules (imports under
``if TYPE_CHECKING:`` and lazy imports inside functions are left out; a
package's ``__init__`` counts when a module of another package names it).

Usage: ``python tools/import_cycles.py [ROOT]`` — prints each cycle found and
the count; exit 0 when there are none.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_names(package: Path) -> dict[str, Path]:
    """Every module of ``package`` by dotted name."""
    names = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The apiexec modules ``name`` imports when it is loaded."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)

    visit(ast.parse(path.read_text()).body)
    targets = {m for m in found if m in known and m != name}
    for target in list(targets):  # a sub-package's __init__ runs first
        parts = target.split(".")
        for i in range(2, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in known and prefix != name and not name.startswith(prefix + "."):
                targets.add(prefix)
    return targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first walk, as the cycle it closes."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif not state.get(nxt):
                walk(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            walk(node, [])
    return found


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    known = module_names(root / "apiexec")
    graph = {name: imported(path, name, known) for name, path in known.items()}
    found = cycles(graph)
    for cycle in found:
        print(" -> ".join(cycle))
    print(f"import cycles: {len(found)} ({len(graph)} modules)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
