"""The layout's import rules, read from the code with `ast` (docs/architecture.md, "Layers").

Every import counts, the ones inside functions too: a lazy import is still a dependency.
The one exception is the CLI (`pipeline/cli.py`), which dispatches to the operator tools and
the bench lazily, so `python -m pipeline bench` works without the product importing them.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("core", "shm", "engines", "models", "skills", "workers", "pipeline", "tools")
PACKAGES = PRODUCT + ("bench", "tests")
# What each product package may import, besides itself (lower layers only).
ALLOWED = {
    "shm": set(),
    "core": set(),
    "engines": {"core"},
    "skills": {"core"},
    "models": {"core", "engines"},
    "workers": {"core", "shm", "engines", "models", "skills"},
    "pipeline": {"core", "shm", "engines", "models", "skills", "workers"},
    "tools": {"core", "shm", "engines", "models", "skills", "workers", "pipeline"},
}
CLI_DISPATCH = ("pipeline/cli.py", {"tools", "bench"})


def imports_of(path: Path) -> set[str]:
    """Top-level packages of Vigil that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in PACKAGES)
    return found


def package_edges() -> dict[str, dict[str, list[str]]]:
    """{package: {imported package: [files]}} over every .py file of every top-level package."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for target in imports_of(path) - {package}:
                if rel == CLI_DISPATCH[0] and target in CLI_DISPATCH[1]:
                    continue
                edges[package][target].append(rel)
    return edges


def test_every_package_imports_only_lower_layers():
    edges = package_edges()
    wrong = {f"{package} -> {target}: {files}"
             for package, allowed in ALLOWED.items()
             for target, files in edges[package].items() if target not in allowed}
    assert not wrong, "\n".join(sorted(wrong))


def test_nothing_in_the_product_imports_bench_or_tests():
    edges = package_edges()
    wrong = [f"{package} -> {target}: {edges[package][target]}" for package in PRODUCT
             for target in ("bench", "tests") if edges[package].get(target)]
    assert not wrong, wrong


def test_no_cycle_between_top_level_packages():
    edges = package_edges()
    graph = {package: set(targets) for package, targets in edges.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(p for p in graph if reaches(p, p, {p}))
    assert not cycles, {p: sorted(graph[p]) for p in cycles}


def test_the_rules_see_a_backwards_import(tmp_path):
    """The checker itself: an engine importing a worker is found (a rule that can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from workers.stt import SttWorker\n    import pipeline.cli\n")
    assert imports_of(bad) == {"workers", "pipeline"}
