"""The floors of the package, checked on its import graph (every import, function-level ones too):
no import circles; the foundation imports nothing above it; the config schemas sit on the
foundation alone; the REER search imports no model backend."""

from __future__ import annotations

import ast
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


def import_graph() -> Dict[str, Set[str]]:
    files = {}
    for p in (REPO / "deepwriter").rglob("*.py"):
        rel = p.relative_to(REPO).with_suffix("")
        files[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = p

    def module_of(name: str) -> str:
        while name not in files:
            name = name.rpartition(".")[0]
        return name

    graph: Dict[str, Set[str]] = {m: set() for m in files}
    for m, p in files.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deepwriter"):
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("deepwriter")]
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
