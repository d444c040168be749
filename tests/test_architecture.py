"""The floors of the package, checked on its import graph (every import, function-level and relative
ones too): no import circles, and every import points down the floors, folder by folder:

    core -> config -> tracking -> llm -> serving -> cluster -> pairs -> synthesis | eval -> mix -> sft
         -> viewer -> pipeline -> commands -> testing -> the entry points (deepwriter/<command>.py)

llm/ holds the model backends only: it imports nothing of serving/ (the run's managed servers) or
cluster/ (SLURM). The REER search imports no model backend (derived: whatever implements the interface
of llm/base.py), and the product, entry points included, never imports tests/ or testing/."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import Dict, List, Set

from deepwriter.testing.repo import REPO

# Bottom up; a folder may import its own floor's modules and any floor below it. synthesis and eval
# share a floor: neither imports the other.
FLOORS = [
    {"core"},
    {"config"},
    {"tracking"},
    {"llm"},
    {"serving"},
    {"cluster"},
    {"pairs"},
    {"synthesis", "eval"},
    {"mix"},
    {"sft"},
    {"viewer"},
    {"pipeline"},
    {"commands"},
    {"testing"},
    {"<entry>"},
]
ENTRY_POINTS = {"train", "serve", "plan", "report", "prompts", "export", "dashboard", "ablations"}
INTERFACE = "deepwriter.llm.base"  # the model interface: Protocol classes every backend implements


def protocol_methods(path: Path) -> Dict[str, Set[str]]:
    """Protocol class -> its method names, in the interface module's source."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "Protocol" for b in node.bases):
            found[node.name] = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
    return found


def backends(files: Dict[str, Path]) -> Dict[str, Set[str]]:
    """The model backends, derived, not listed: every module of the model floor (llm/) with a class
    that has every method of one of the interface's Protocols -> those Protocols."""
    protocols = protocol_methods(files[INTERFACE])
    found: Dict[str, Set[str]] = {}
    for m, path in files.items():
        if folder_of(m) != "llm" or m == INTERFACE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
                found.setdefault(m, set()).update(p for p, need in protocols.items() if need <= methods)
    return {m: ps for m, ps in found.items() if ps}


def module_files(root: Path = REPO / "deepwriter") -> Dict[str, Path]:
    files = {}
    for p in root.rglob("*.py"):
        rel = p.relative_to(root.parent).with_suffix("")
        files[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = p
    return files


def imported_names(module: str, path: Path, top: str = "deepwriter") -> Set[str]:
    """Every module name of the package `top` an import statement of the file names, relative ones
    resolved against the module's package (`from . import x`, `from ..core import files`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            if base == top or base.startswith(top + "."):
                names |= {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name == top or a.name.startswith(top + ".")}
    return names


def import_graph(root: Path = REPO / "deepwriter") -> Dict[str, Set[str]]:
    """module -> the package modules it imports, for the package at `root`."""
    files = module_files(root)

    def module_of(name: str) -> str:
        while name not in files:
            name = name.rpartition(".")[0]
        return name

    graph: Dict[str, Set[str]] = {}
    for m, p in files.items():
        graph[m] = {module_of(n) for n in imported_names(m, p, root.name)} - {m, root.name}
    return graph


def folder_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in ENTRY_POINTS:
        return "<entry>"
    return parts[1] if len(parts) > 1 else "<package>"


def floor_of(module: str) -> int:
    folder = folder_of(module)
    return next(i for i, floor in enumerate(FLOORS) if folder in floor)


def reachable(graph: Dict[str, Set[str]], start: str) -> Set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_relative_imports_are_resolved(tmp_path):
    init = tmp_path / "__init__.py"
    init.write_text("from . import dedup\nfrom ..core import files\nfrom .build import gather\n")
    assert imported_names("deepwriter.mix", init) >= {"deepwriter.mix.dedup", "deepwriter.mix.build.gather"}
    assert "deepwriter.core.files" in imported_names("deepwriter.mix", init)
    module = tmp_path / "stage.py"
    module.write_text("from .build import gather\nfrom .. import pipeline\n")
    assert imported_names("deepwriter.mix.stage", module) >= {"deepwriter.mix.build.gather", "deepwriter.pipeline"}


def test_every_module_is_on_a_floor():
    folders = {folder_of(m) for m in import_graph()} - {"<package>"}
    assert folders <= set().union(*FLOORS), folders - set().union(*FLOORS)
    assert not [p for p in (REPO / "deepwriter").glob("*.py") if p.stem not in ENTRY_POINTS | {"__init__"}], (
        "the top level holds only the entry points"
    )


def test_no_import_circles():
    graph = import_graph()
    circles = sorted(m for m in graph if m in reachable(graph, m))
    assert circles == [], f"modules on an import circle: {circles}"


def test_every_import_points_down_the_floors():
    graph = import_graph()
    upward = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        for t in targets
        if m != "deepwriter" and floor_of(t) > floor_of(m)
    )
    assert upward == []


def test_synthesis_and_eval_stay_apart():
    graph = import_graph()
    for m, targets in graph.items():
        other = {"synthesis": "eval", "eval": "synthesis"}.get(folder_of(m))
        assert not [t for t in targets if folder_of(t) == other], m


def test_the_product_never_imports_tests_or_testing():
    graph = import_graph()
    for m, targets in graph.items():
        if folder_of(m) != "testing":  # the entry points are product too: a user runs them
            assert not [t for t in targets if folder_of(t) == "testing"], m
    for p in list((REPO / "deepwriter").rglob("*.py")) + list((REPO / "bench").glob("*.py")):
        text = p.read_text()
        assert "from tests" not in text and "import tests" not in text, p


def test_the_readme_draws_the_floors_as_the_code_has_them():
    """The README's architecture table lists the floors bottom up, one row per floor, as FLOORS does."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Architecture") :]
    rows = [line for line in section.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    drawn = [set(re.findall(r"`(\w+)/`", row.split("|")[2])) or {"<entry>"} for row in rows]
    assert drawn == FLOORS


def test_llm_holds_model_backends_only():
    """Nothing under llm/ reaches serving/ or cluster/, not even through another module."""
    graph = import_graph()
    for m in graph:
        if folder_of(m) == "llm":
            assert not {folder_of(t) for t in reachable(graph, m)} & {"serving", "cluster"}, m


def test_every_entry_point_is_named_like_the_module_of_its_logic():
    """deepwriter/<command>.py is thin: its logic is deepwriter.commands.<command> (train: the pipeline)."""
    graph = import_graph()
    for command in ENTRY_POINTS - {"train"}:
        assert f"deepwriter.commands.{command}" in graph[f"deepwriter.{command}"], command


def test_the_search_is_a_pure_algorithm_over_the_model_interface():
    graph, files = import_graph(), module_files()
    found = backends(files)
    # the derivation finds an implementer of every Protocol (else it would find nothing and prove nothing)
    assert set().union(*found.values()) == set(protocol_methods(files[INTERFACE])), found
    assert not reachable(graph, "deepwriter.synthesis.search") & set(found)
    assert INTERFACE in graph["deepwriter.synthesis.search"]


def test_backends_are_derived_from_the_interface(tmp_path):
    pkg = tmp_path / "deepwriter"
    for rel, text in {
        "__init__.py": "",
        "llm/__init__.py": "",
        "llm/base.py": "from typing import Protocol\nclass Generator(Protocol):\n    def generate(self): ...\n",
        "llm/new_engine.py": "class Engine:\n    def generate(self):\n        return 1\n",
        "llm/helpers.py": "def generate():\n    pass\n",
        "synthesis/__init__.py": "",
        "synthesis/search.py": "class Search:\n    def generate(self):\n        pass\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    assert backends(module_files(pkg)) == {"deepwriter.llm.new_engine": {"Generator"}}


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


def unexplained_local_imports(path: Path, top: str = "deepwriter") -> List[str]:
    """`file:line` of each import of a `top` module inside a function with no reason beside it: a comment
    on one of the statement's lines, or on a comment line right above its run of imports (a circle it
    breaks, a heavy library it defers). Anything else belongs at the top of the module."""
    text = path.read_text()
    if not re.search(rf"^[ \t]+(from|import) {top}\b", text, re.M):  # no indented import of the package
        return []
    lines = text.splitlines()
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    # a linter's directive (noqa, type: ignore, pragma) gives no reason
    directive = re.compile(r"#\s*(noqa|type:|pragma)")
    commented = {t.start[0] for t in tokens if t.type == tokenize.COMMENT and not directive.match(t.string)}
    found = []
    for fn in ast.walk(ast.parse(text)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        blocks = [getattr(n, k, None) for n in ast.walk(fn) for k in ("body", "orelse", "finalbody", "handlers")]
        for body in (b for b in blocks if isinstance(b, list)):
            for i, node in enumerate(body):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if not any(n == top or n.startswith(top + ".") for n in names):
                    continue
                first = node.lineno  # the first line of this run of imports
                for prev in reversed(body[:i]):
                    if not isinstance(prev, (ast.Import, ast.ImportFrom)):
                        break
                    first = prev.lineno
                above = lines[first - 2].strip() if first > 1 else ""
                if not commented & set(range(node.lineno, node.end_lineno + 1)) and not above.startswith("#"):
                    found.append(node.lineno)
    return [f"{path}:{line}" for line in sorted(set(found))]


def test_a_function_imports_the_package_only_with_a_reason():
    unexplained = [u for p in sorted((REPO / "deepwriter").rglob("*.py")) for u in unexplained_local_imports(p)]
    assert unexplained == [], "move these to the top of their module, or say why they wait:\n" + "\n".join(unexplained)


def test_local_imports_without_a_reason_are_found(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "import os\n\n\ndef a():\n    from deepwriter.core import files\n\n\n"
        "def b():\n    from deepwriter.llm.hf import x  # torch\n"
        "    from deepwriter.core import records  # noqa: F401\n\n"
        "def c():\n    # circle: deepwriter.x imports this module\n    from deepwriter.x import y\n"
        "    from deepwriter.z import w\n\n\n"
        "def d():\n    if True:\n        import deepwriter.q\n    import json\n"
    )
    assert unexplained_local_imports(f) == [f"{f}:5", f"{f}:10", f"{f}:20"]


def untyped_configs(path: Path) -> List[str]:
    """`file:line name` of each parameter or dataclass field named like a config (`cfg`, `sft_cfg`,
    `bcfg`, ...) annotated `Any`: a config parameter names its dataclass (deepwriter.config)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            named = [(x.arg, x.annotation) for x in a.posonlyargs + a.args + a.kwonlyargs]
        elif isinstance(node, ast.ClassDef):
            named = [(getattr(x.target, "id", None), x.annotation) for x in node.body if isinstance(x, ast.AnnAssign)]
            named = [(n, ann) for n, ann in named if isinstance(n, str)]
        else:
            continue
        for name, ann in named:
            is_any = ann is not None and ast.unparse(ann).strip("'\"") in ("Any", "typing.Any")
            if is_any and name.endswith("cfg"):
                found.append(f"{path}:{ann.lineno} {name}")
    return found


def test_no_config_parameter_is_typed_any():
    untyped = [u for p in sorted((REPO / "deepwriter").rglob("*.py")) for u in untyped_configs(p)]
    assert untyped == [], "type these with their config dataclass:\n" + "\n".join(untyped)
