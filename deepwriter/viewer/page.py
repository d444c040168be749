"""Write the report page: report.html with the data of one or more runs, the CSS and JS of static/
inlined, and the large per-pair and per-item details in chunk files beside it.

    <out>.html                       the page: compact table rows, charts' data, the viewer's code
    <out>_files/r<R>-<kind>-<NNNN>.js  CHUNK details each, as window.__chunk(R, kind, N, [...])

A page from file:// may load <script src> but not fetch(), hence chunks as scripts. A small run's
details are inlined instead, so its page is one file that can be mailed around.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from deepwriter.viewer import collect

CHUNK = 200  # details per chunk file: a click loads ~200 pairs' texts, a few MB at most
INLINE_LIMIT = 200  # up to this many details of a kind, the page carries them itself
STATIC = Path(__file__).resolve().parent / "static"
DETAIL_KINDS = {"pairs": "synthesize", "items": "eval"}  # detail kind -> the section that holds it

# Runs before the data and the viewer: records every script error into the page itself, where a
# reader sees it and a headless test reads it back from the DOM.
PRELUDE = """
window.__errors = [];
window.addEventListener("error", function (e) {
  var msg = (e.message || "error") + (e.filename ? " at " + e.filename + ":" + e.lineno : "");
  window.__errors.push(msg);
  var box = document.getElementById("js-errors");
  if (box) { box.hidden = false; box.appendChild(document.createTextNode(msg + "\\n")); }
});
window.addEventListener("unhandledrejection", function (e) { window.__errors.push("unhandled: " + e.reason); });
window.__chunks = {};
window.__chunk = function (run, kind, n, data) {
  window.__chunks[run + "/" + kind + "/" + n] = data;
  if (window.__onchunk) window.__onchunk(run, kind, n);
};
"""


def script_literal(value: Any) -> str:
    """JSON that is safe inside <script>: no "</script>" or "<!--" can end or bend the element."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\!--")


def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _batches(items: Iterable[Any], size: int) -> Iterator[List[Any]]:
    batch: List[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_details(runs: List[Dict[str, Any]], files_dir: Path) -> Tuple[List[str], Dict[str, Any]]:
    """Take the details out of the runs' sections, in CHUNK-sized calls of window.__chunk: inline
    ones (returned) for a small section, files in files_dir for a large one, written as they are read."""
    inline: List[str] = []
    chunks: Dict[str, Any] = {}
    for r, data in enumerate(runs):
        for kind, name in DETAIL_KINDS.items():
            section = data.get(name)
            if not section:
                continue
            details = section.pop("details")
            embed = len(section["rows"]) <= INLINE_LIMIT
            chunks[f"{r}/{kind}"] = {"size": CHUNK, "prefix": f"{files_dir.name}/r{r}-{kind}-"}
            for n, batch in enumerate(_batches(details(), CHUNK)):
                call = f"window.__chunk({r},{json.dumps(kind)},{n},{script_literal(batch)});"
                if embed:
                    inline.append(call)
                else:
                    files_dir.mkdir(exist_ok=True)
                    (files_dir / f"r{r}-{kind}-{n:04d}.js").write_text(call + "\n", encoding="utf-8")
    return inline, chunks


def write_page(
    runs: List[Dict[str, Any]],
    out: Path,
    links: Optional[List[Optional[str]]] = None,
    pairwise: Optional[Dict[str, Any]] = None,
) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    files_dir = out.with_name(out.stem + "_files")
    if files_dir.is_dir():  # the chunks of an earlier build of this page
        shutil.rmtree(files_dir)
    inline, chunks = _write_details(runs, files_dir)
    report = {"runs": runs, "links": links or [None] * len(runs), "chunks": chunks, "pairwise": pairwise}
    title = "deepwriter report: " + ", ".join(r["label"] for r in runs)
    html = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_escape(title)}</title>
<script>{PRELUDE}</script>
<style>{_static("report.css")}</style>
</head>
<body>
<pre id="js-errors" hidden></pre>
<div id="app">Loading the report…</div>
<script>window.__REPORT = {script_literal(report)};</script>
{"".join(f"<script>{c}</script>" for c in inline)}
<script>{_static("report.js")}</script>
</body>
</html>
"""
    out.write_text(html, encoding="utf-8")
    return out


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_run_report(run_dir: Path, out: Optional[Path] = None) -> Path:
    """runs/<recipe>/<run_id>/report.html (or `out`) from the run's stage folders."""
    run_dir = Path(run_dir)
    return write_page([collect.run(run_dir)], Path(out) if out else run_dir / "report.html")


def build_report(run_dirs: List[Path], out: Optional[Path] = None, pairwise: Optional[Dict[str, Any]] = None) -> Path:
    """One run: its report. Several: a page with them side by side (the ablation table and each run's
    sections), linked to each run's own report.html, built here where it is missing; with `pairwise`
    (a deepwriter.eval.pairwise result of these runs), their head-to-head figures too."""
    run_dirs = [Path(d) for d in run_dirs]
    if len(run_dirs) == 1:
        return build_run_report(run_dirs[0], out)
    out = Path(out) if out else Path("report.html")
    links = []
    for d in run_dirs:
        own = d / "report.html"
        if not own.is_file():
            build_run_report(d)
        links.append(os.path.relpath(own.resolve(), out.resolve().parent))
    runs = [collect.run(d) for d in run_dirs]
    for r, paired in zip(runs, collect.paired_vs_first(run_dirs)):
        r["paired_vs_first"] = paired  # the ablation table's Δ columns: paired differences with intervals
    return write_page(runs, out, links, pairwise)
