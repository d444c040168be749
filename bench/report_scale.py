"""Size and first-render time of the run report at scale: a 20K-pair synthesis vs a 200-pair one.

Writes fake but realistically sized synthesis records (x ~300 chars, y ~3,000, z ~4,000, 0–10 search
steps of 2 candidates, accepted edits spliced into z) into a run folder, builds its report.html and
opens it in headless Chromium. Prints the page's size, the size of the chunk files beside it, the
build time, the time to first render (as the page records it, performance.now() when the viewer has
drawn, and the wall time of the whole browser call) and the time one sort of the table takes: the
large run against the small baseline measured in the same run.

    python -m bench.report_scale [--pairs 20000] [--baseline 200] [--repeats 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from deepwriter.testing import browser
from deepwriter.viewer import build_run_report

CATEGORIES = [
    "creative & narrative",
    "essay & argument",
    "business correspondence",
    "poetry & lyrics",
    "travel & lifestyle",
    "product & advertising copy",
    "speeches & toasts",
    "writing for children",
]
WORDS = (
    "the reader should feel the argument build rather than be told the conclusion up front so every paragraph "
    "needs its own evidence and a clear turn maybe the opening starts from a concrete scene instead of a "
    "definition wait the request asks for three arguments each with a study or a statistic let me think about "
    "the structure first a thesis then sections then a counterargument and a close that restates the thesis"
).split()


def text(rng: random.Random, chars: int) -> str:
    """About `chars` characters of plausible prose in paragraphs."""
    out, n = [], 0
    target = max(20, int(rng.gauss(chars, chars * 0.2)))
    while n < target:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
        out.append(sentence + ("\n\n" if rng.random() < 0.15 else " "))
        n += len(sentence) + 1
    return "".join(out).strip()


def fake_record(i: int, rng: random.Random) -> dict:
    segments = [text(rng, 500) for _ in range(8)]
    z0 = "\n\n".join(segments)
    score = rng.uniform(1.2, 2.4)
    scores, steps, edits = [score], [], []
    for step in range(1, rng.randint(0, 10) + 1):
        seg = (step - 1) % len(segments)
        candidates = [
            {"text": text(rng, 450), "score": score + rng.uniform(-0.08, 0.05), "raw": None} for _ in range(2)
        ]
        best = min(candidates, key=lambda c: c["score"])
        accepted = best["score"] < score
        if accepted:
            edits.append(
                {
                    "step": step,
                    "segment": seg,
                    "before": segments[seg],
                    "after": best["text"],
                    "score_before": score,
                    "score_after": best["score"],
                }
            )
            segments[seg], score = best["text"], best["score"]
        scores.append(score)
        steps.append({"step": step, "segment": seg, "candidates": candidates, "accepted": accepted})
    kept = rng.random() < 0.85
    return {
        "id": f"pair-{i:06d}",
        "x": text(rng, 300),
        "y": text(rng, 3000),
        "category": rng.choice(CATEGORIES),
        "z0": z0,
        "z_final": "\n\n".join(segments) if edits else z0,
        "scores": scores,
        "steps": steps,
        "accepted_edits": edits,
        "tokens": {"prompt": rng.randint(4000, 40000), "completion": rng.randint(300, 3000), "target": 700},
        "verdict": {"kept": kept, "reason": None if kept else rng.choice(["repetition", "too_short", "language"])},
        "timings": {"total_s": rng.uniform(20, 200)},
        "trigger": "Okay",
    }


def fake_run(root: Path, pairs: int, seed: int = 0) -> Path:
    """runs/<recipe>/<run_id> with a finished synthesize stage of `pairs` fake records."""
    run = root / "bench" / f"pairs-{pairs}"
    stage = run / "synthesize"
    (stage / "shards").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kept = steps = accepted = 0
    with open(stage / "shards" / "shard-00000-of-00001.jsonl", "w") as f:
        for i in range(pairs):
            rec = fake_record(i, rng)
            kept += rec["verdict"]["kept"]
            steps += len(rec["steps"])
            accepted += len(rec["accepted_edits"])
            f.write(json.dumps(rec) + "\n")
    counts = {"pairs": pairs, "kept": kept, "discarded": pairs - kept, "steps": steps, "accepted_edits": accepted}
    (stage / "manifest.json").write_text(json.dumps({"status": "complete", "stage": "synthesize", "counts": counts}))
    stages = {"synthesize": {"status": "ran", "seconds": 0.0}}
    (run / "manifest.json").write_text(json.dumps({"recipe": "bench", "run_id": run.name, "stages": stages}))
    return run


# Clicks the final-score header twice (a numeric sort of every row, both ways) and times it.
SORT_PROBE = """
var th = document.querySelector('#synthesis-0 th[data-col="score_final"]');
var t0 = performance.now();
th.click();
th.click();
document.body.setAttribute('data-sort-ms', ((performance.now() - t0) / 2).toFixed(1));
"""


def sort_ms(page: Path) -> float:
    dom, _ = browser.open_page(page, SORT_PROBE, budget_ms=0, timeout=60)
    return float(re.search(r'data-sort-ms="([\d.]+)"', dom).group(1))


def size_of(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def measure(root: Path, pairs: int, repeats: int) -> dict:
    run = fake_run(root, pairs)
    t0 = time.perf_counter()
    page = build_run_report(run)
    build_s = time.perf_counter() - t0
    beside = page.with_name(page.stem + "_files")
    files = sorted(beside.glob("*")) if beside.is_dir() else []
    renders = [browser.render_time(page) for _ in range(repeats)]
    return {
        "pairs": pairs,
        "page": page,
        "html_bytes": page.stat().st_size,
        "beside_bytes": size_of(files),
        "beside_files": len(files),
        "shard_bytes": size_of((run / "synthesize" / "shards").glob("*.jsonl")),
        "build_s": build_s,
        "render_ms": statistics.median(r[0] for r in renders),
        "wall_s": statistics.median(r[1] for r in renders),
        "sort_ms": statistics.median(sort_ms(page) for _ in range(repeats)),
    }


def mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report_scale", description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20000, help="pairs of the large synthesis")
    ap.add_argument("--baseline", type=int, default=200, help="pairs of the baseline synthesis")
    ap.add_argument("--repeats", type=int, default=3, help="browser opens per page (the median is printed)")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args(argv)
    if browser.find_chromium() is None:
        print("bench.report_scale: no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="report-scale-") as tmp:
        root = args.out or Path(tmp)
        base = measure(root, args.baseline, args.repeats)
        big = measure(root, args.pairs, args.repeats)
        print(f"chromium: {browser.find_chromium()}; median of {args.repeats} opens each")
        for r in (base, big):
            print(
                f"pairs {r['pairs']:>6}  shard {mb(r['shard_bytes']):>10}  report.html {mb(r['html_bytes']):>9}  "
                f"beside {mb(r['beside_bytes']):>10} in {r['beside_files']:>3} files  build {r['build_s']:.2f}s  "
                f"first render {r['render_ms']:.0f} ms  browser wall {r['wall_s']:.2f}s  sort {r['sort_ms']:.1f} ms"
            )
        html_x = big["html_bytes"] / base["html_bytes"]
        render_x, wall_x = big["render_ms"] / base["render_ms"], big["wall_s"] / base["wall_s"]
        print(
            f"ratio {big['pairs']} vs {base['pairs']} pairs: report.html {html_x:.1f}x, "
            f"first render {render_x:.2f}x, browser wall {wall_x:.2f}x"
        )
        if args.out:
            print(f"pages: {base['page']} {big['page']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
