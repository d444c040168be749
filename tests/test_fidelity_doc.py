"""docs/FIDELITY.md stays true: each rule names a reference location, a status of a known kind and,
where it can be tested, a test that exists; the counts at the top are the table's."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "FIDELITY.md"
REPOS = ("REER", "THUDM/LongWriter", "Quehry/HelloBench", "X-PLUG/WritingBench")
REFERENCE = re.compile(rf"^({'|'.join(re.escape(r) for r in REPOS)}) [\w./-]+:\d+$|^— \(.+\)$")
TEST = re.compile(r"^(tests/(?:\w+/)?\w+\.py)::(\w+)$")


def rows():
    out = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if re.match(r"^\| [SJD]\d+ \|", line):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            assert len(cells) == 6, f"{cells[0]}: expected 6 cells, got {len(cells)}"
            out.append(cells)
    return out


def _test_names(path: Path) -> set:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_row_is_well_formed_and_its_test_exists():
    table = rows()
    assert len(table) >= 60
    ids = [r[0] for r in table]
    assert len(ids) == len(set(ids)), "row ids repeat"
    for rid, rule, ref, ours, status, test in table:
        assert rule and ours, rid
        assert REFERENCE.match(ref), f"{rid}: reference {ref!r} is not '<repo> <file>:<line>' or '— (why)'"
        assert status == "same" or re.match(r"^deviation: \S.{10,}", status), f"{rid}: status {status!r}"
        if test == "—":
            assert status != "same" or ref.startswith("—"), f"{rid}: a rule kept the same needs a test"
            continue
        m = TEST.match(test)
        assert m, f"{rid}: test {test!r} is not tests/[<package>/]<file>.py::<name>"
        assert m.group(2) in _test_names(ROOT / m.group(1)), f"{rid}: {test} does not exist"


def test_counts_line_matches_the_table():
    kinds = Counter("same" if r[4] == "same" else "deviation" for r in rows())
    line = next(ln for ln in DOC.read_text(encoding="utf-8").splitlines() if ln.startswith("Counts:"))
    assert line == f"Counts: {len(rows())} rules, {kinds['same']} same, {kinds['deviation']} deviations."
