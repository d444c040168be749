"""The floors of the package, checked on its import graph (every import, function-level ones too):
no import circles; the foundation imports nothing above it; the config schemas sit on the
foundation alone; the REER search imports no model backend."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

from conftest import REPO

FOUNDATION = {
    "deepwriter.errors",
    "deepwriter.files",
    "deepwriter.records",
    "deepwriter.schema",
    "deepwriter.think",
    "deepwriter.contract",
    "deepwriter.unfinished",
}
SCHEMAS = {
    "deepwriter.config",
    "deepwriter.llm.config",
    "deepwriter.synthesis.config",
    "deepwriter.data.config",
    "deepwriter.sft.config",
    "deepwriter.eval.config",
    "deepwriter.fleet",  # the cost projection's fleet and workload figures
}
BACKENDS = {"deepwriter.llm.hf", "deepwriter.llm.hf_prefix", "deepwriter.llm.openai_http", "deepwriter.models"}


def import_graph(root: Path = REPO / "deepwriter") -> Dict[str, Set[str]]:
    """module -> the package modules it imports, for the package at `root`; relative imports
    (`from . import x`, `from ..y import z`) resolved against the importing module's package."""
    top = root.name
    files = {}
    for p in root.rglob("*.py"):
        rel = p.relative_to(root.parent).with_suffix("")
        files[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = p

    def module_of(name: str) -> str:
        while name not in files:
            name = name.rpartition(".")[0]
        return name

    graph: Dict[str, Set[str]] = {m: set() for m in files}
    for m, p in files.items():
        package = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: up level - 1 packages from this module's own
                    parts = package.split(".")
                    assert node.level <= len(parts), f"{p}:{node.lineno}: relative import beyond the package"
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                if base != top and not base.startswith(top + "."):
                    continue
                names = [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name == top or a.name.startswith(top + ".")]
            else:
                continue
            graph[m] |= {module_of(n) for n in names} - {m}
    return graph


def reachable(graph: Dict[str, Set[str]], start: str) -> Set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_circles():
    graph = import_graph()
    circles = sorted(m for m in graph if m in reachable(graph, m))
    assert circles == [], f"modules on an import circle: {circles}"


def test_the_foundation_imports_nothing_above_it():
    graph = import_graph()
    assert FOUNDATION <= set(graph)
    for m in FOUNDATION:
        assert graph[m] <= FOUNDATION, (m, graph[m] - FOUNDATION)
    for m in SCHEMAS:  # typed configs: the foundation and each other, never a stage's code
        assert graph[m] <= FOUNDATION | SCHEMAS, (m, graph[m] - FOUNDATION - SCHEMAS)


def test_the_search_is_a_pure_algorithm_over_the_model_interface():
    graph = import_graph()
    assert not reachable(graph, "deepwriter.synthesis.search") & BACKENDS
    assert "deepwriter.llm.base" in graph["deepwriter.synthesis.search"]


def test_relative_imports_are_edges_too(tmp_path):
    pkg = tmp_path / "pkg"
    for rel, text in {
        "__init__.py": "from . import a\n",
        "a.py": "from .sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "from .. import c\nfrom ..c import thing\nfrom . import d\n",
        "sub/d.py": "from ..sub.b import x\nimport pkg.c\n",
        "c.py": "import os\nfrom json import loads\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = import_graph(pkg)
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.c", "pkg.sub.d"},
        "pkg.sub.d": {"pkg.sub.b", "pkg.c"},
        "pkg.c": set(),
    }
    assert "pkg.sub.b" in reachable(graph, "pkg.sub.b")  # the b <-> d circle is seen
