"""The run report in a real browser: headless Chromium opens report.html from disk and a probe script
(run in the page after the viewer) clicks through it and writes what it saw into the DOM, which the
test reads back. Checked: one table row per synthesized pair, an accepted rewrite highlighted with the
text it replaced on hover, sorting and filtering, lazy loading of a large run's details from the files
beside the page, the mix/SFT/eval sections, and not one message on the browser console.

Screenshots go to the folder the tests print (pytest -s shows it)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepwriter.testing import browser
from deepwriter.testing.repo import REPO
from deepwriter.viewer import build_report, build_run_report

# a missing Chromium fails these tests (`make browser`), unless DEEPWRITER_ALLOW_SKIP=browser (conftest)
needs_chromium = pytest.mark.usefixtures("chromium")

EDIT_BEFORE = "First I restate the request in my own words, slowly."
EDIT_AFTER = "The request wants a lighthouse keeper and an answering light; start from the light."
CATEGORIES = ["creative & narrative", "essay & argument", "poetry & lyrics"]
TINY_MODEL = {
    "num_hidden_layers": 4,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "tie_word_embeddings": True,
}


def pair_record(i: int, *, edit: bool = False, kept: bool = True) -> dict:
    segs = [EDIT_BEFORE if edit else f"Pair {i} opening thought, plain.", f"Pair {i} middle.", f"Pair {i} close."]
    z0 = "\n\n".join(segs)
    z0_score = 1.5 + (i % 7) / 10
    steps, edits, scores = [], [], [z0_score]
    if edit:
        after_score = z0_score - 0.25
        steps.append(
            {
                "step": 1,
                "segment": 0,
                "accepted": True,
                "candidates": [
                    {"text": EDIT_AFTER, "score": after_score, "raw": None},
                    {"text": "A worse rewrite.", "score": z0_score + 0.1, "raw": None},
                ],
            }
        )
        edits.append(
            {
                "step": 1,
                "segment": 0,
                "before": EDIT_BEFORE,
                "after": EDIT_AFTER,
                "score_before": z0_score,
                "score_after": after_score,
            }
        )
        scores.append(after_score)
    z_final = "\n\n".join([EDIT_AFTER] + segs[1:]) if edit else z0
    return {
        "id": f"p{i:03d}" if not edit else "p-edit",
        "x": f"Write piece number {i} about the sea. <script>alert(1)</script>",
        "y": f"Answer {i}: the sea was calm.",
        "category": CATEGORIES[i % len(CATEGORIES)],
        "z0": z0,
        "z_final": z_final,
        "scores": scores,
        "steps": steps,
        "accepted_edits": edits,
        "tokens": {"prompt": 1000 + 37 * i, "completion": 100 + i, "target": 50},
        "verdict": {"kept": kept, "reason": None if kept else "repetition"},
        "timings": {"generate_s": 0.75 + i, "score_s": 0.3, "total_s": 30.5},
        "trigger": "Okay",
    }


# The per-pair figures of the detail view (deepwriter/viewer/static/report.js).
MODEL_SECONDS = "model seconds (generate + score: its share of the batched calls)"
IN_FLIGHT_SECONDS = "wall seconds in flight (admitted to done, beside the other pairs in flight)"


def write_run(root: Path, n_pairs: int) -> Path:
    """A finished run folder with every stage's files, as the stages write them."""
    run = root / "runs" / "demo" / f"run-{n_pairs}"
    syn = run / "synthesize"
    (syn / "shards").mkdir(parents=True)
    records = [pair_record(i, kept=i % 5 != 3) for i in range(n_pairs - 1)] + [pair_record(n_pairs - 1, edit=True)]
    (syn / "shards" / "shard-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    kept = sum(r["verdict"]["kept"] for r in records)
    counts = {"pairs": n_pairs, "kept": kept, "discarded": n_pairs - kept, "steps": 1, "accepted_edits": 1}
    counts.update(discarded_repetition=n_pairs - kept, discarded_over_generator_context=0, refine_steps_over_context=0)
    # the synthesize stage's comparison with the authors' released trajectories (pairs read from DeepWriting-20K)
    compared = {
        "pairs": 3,
        "score_ours": 1.2346,
        "score_ours_se": 0.01,
        "score_released": 1.3,
        "score_released_se": 0.02,
    }
    compared.update(score_difference=-0.0655, score_difference_se=0.005, words_ours=410.0, words_ours_se=12.0)
    compared.update(words_released=820.5, words_released_se=30.5, accepted_edits_ours=1.5, accepted_edits_ours_se=0.5)
    compared.update(ours_lower_share=0.667, ours_lower_share_se=0.272)
    syn_manifest = {"status": "complete", "counts": counts, "metrics": {"released_comparison": compared}}
    (syn / "manifest.json").write_text(json.dumps(syn_manifest))

    mix = run / "mix"
    (mix / "dropped").mkdir(parents=True)
    (mix / "dataset").mkdir()
    dropped = [
        {"id": f"dup{i}", "source": "synthetic", "category": "poetry & lyrics", "reason": "exact duplicate"}
        for i in range(5)
    ]
    (mix / "dropped" / "exact_dedup.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dropped))
    (mix / "DATA_CARD.md").write_text("# Data card: SFT mix\n\nfour samples\n")
    mix_counts = {"synthetic": 3, "public": 1, "total": 4}
    (mix / "manifest.json").write_text(json.dumps({"status": "complete", "counts": mix_counts, "metrics": {}}))
    _write_dataset(mix / "dataset")

    sft = run / "sft"
    sft.mkdir()
    log = [
        {"step": s, "loss": 2.5 - 0.2 * s, "learning_rate": 5e-5 * (1 - s / 10), "tokens_per_s": 20.0 + s}
        for s in range(1, 9)
    ]
    for row in log:
        row["mem/cpu_max_rss_gb"] = 1.5 + row["step"] / 100
    (sft / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (sft / "model").mkdir()
    (sft / "model" / "config.json").write_text(json.dumps(TINY_MODEL))
    settings = {"per_device_batch_size": 2, "max_length": 512, "gradient_checkpointing": True, "bf16": True}
    settings.update(deepspeed={"enabled": False, "config": {}}, lora={"enabled": False, "r": 16})
    sft_manifest = {"status": "complete", "counts": {"steps": 8, "world_size": 1, "grad_accum": 2}}
    sft_manifest.update(metrics={"last_loss": 0.9}, config={"sft": settings})
    (sft / "manifest.json").write_text(json.dumps(sft_manifest))

    ev = run / "eval"
    (ev / "items").mkdir(parents=True)
    summary = {
        "label": f"demo/run-{n_pairs}",
        "benchmarks": {
            "demo": {
                "kind": "longbench_write",
                "summary": {"buckets": {"<500": {"S": 70.0}}, "dimensions": {"relevance": 80.0, "clarity": 60.0}},
                "headline": {"demo": 70.0},
            }
        },
        "headline": {"demo": 70.0},
        "judge_stats": {"calls": 1, "failed": 0, "cost_usd": 0.0},
    }
    (ev / "summary.json").write_text(json.dumps(summary))
    item = {
        "id": "demo-poem",
        "prompt": "Write a poem.",
        "answer": "Snow falls on the town.",
        "thinking": "I should mention the snow.",
        "S_l": 80.0,
        "S_q": 60.0,
        "judge": {"quality": {"ok": True, "values": {"clarity": 4.0}, "reasons": {"clarity": "clear enough imagery"}}},
    }
    (ev / "items" / "demo.jsonl").write_text(json.dumps(item) + "\n")
    stages = {s: {"status": "ran", "seconds": 1.0} for s in ("synthesize", "mix", "sft", "eval")}
    (run / "manifest.json").write_text(json.dumps({"recipe": "demo", "run_id": run.name, "stages": stages}))
    return run


def _write_dataset(folder: Path) -> None:
    import pyarrow as pa

    def sample(source, category, answer):
        return {
            "source": source,
            "category": category,
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}],
        }

    rows = [sample("synthetic", "poetry & lyrics", "a b c d"), sample("synthetic", "essay & argument", "a b c d e f")]
    rows += [sample("synthetic", "poetry & lyrics", "a b"), sample("public", "reasoning", "x y z")]
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)


# The probe: acts in the page and writes what it saw as JSON into <pre id="probe">.
# The end of every probe: its findings and the page's errors into <pre id="probe">, read back from the DOM.
PROBE_END = r"""    out.errors = window.__errors;
    var pre = document.createElement('pre');
    pre.id = 'probe';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  };
  finish();
})();
"""

PROBE = (
    r"""
(function () {
  var out = {};
  var ids = function () {
    return Array.prototype.map.call(document.querySelectorAll('#synthesis-0 tr.row'),
      function (tr) { return tr.children[0].textContent; });
  };
  var num = function (sel) {
    return Array.prototype.map.call(document.querySelectorAll(sel),
      function (tr) { return parseFloat(tr.children[4].textContent); });
  };
  var counter = document.querySelector('#synthesis-0 .count');
  out.rows = document.querySelectorAll('#synthesis-0 tr.row').length;
  out.total = parseInt(counter.getAttribute('data-total'));
  out.first_ids = ids();
  var th = document.querySelector('#synthesis-0 th[data-col="score_final"]');
  th.click();
  out.sorted_desc = num('#synthesis-0 tr.row');
  out.sorted_desc_class = th.className;
  th.click();
  out.sorted_asc = num('#synthesis-0 tr.row');
  var verdict = document.querySelector('#synthesis-0 select[data-filter="verdict"]');
  verdict.value = 'discarded';
  verdict.dispatchEvent(new Event('change'));
  out.discarded_shown = parseInt(counter.getAttribute('data-shown'));
  out.discarded_texts = Array.prototype.map.call(document.querySelectorAll('#synthesis-0 tr.row'),
    function (tr) { return tr.children[2].textContent; });
  verdict.value = 'all';
  verdict.dispatchEvent(new Event('change'));
  var improvement = document.querySelector('#synthesis-0 select[data-filter="improvement"]');
  improvement.value = 'improved';
  improvement.dispatchEvent(new Event('change'));
  out.improved_ids = ids();
  // the pair with the accepted edit, wherever the pages put it
  var row = Array.prototype.find.call(document.querySelectorAll('#synthesis-0 tr.row'),
    function (tr) { return tr.children[0].textContent === 'p-edit'; });
  row.click();
  out.item_rows = document.querySelectorAll('#eval-0 tr.row').length;
  document.querySelector('#eval-0 tr.row').click();
  var tries = 0;
  var finish = function () {
    var marks = document.querySelectorAll('#pair-detail-0 .z-final mark.edit');
    if (!marks.length && tries++ < 50) return setTimeout(finish, 20);
    out.marks = Array.prototype.map.call(marks,
      function (m) { return { text: m.textContent, title: m.getAttribute('title') }; });
    out.detail_title = (document.querySelector('#pair-detail-0 h3') || {}).textContent;
    out.script_tags_in_x = document.querySelectorAll('#pair-detail-0 .x script').length;
    out.x_text = (document.querySelector('#pair-detail-0 .x') || {}).textContent;
    out.curve_points = document.querySelectorAll('#pair-detail-0 svg.line-chart circle').length;
    out.item_text = document.getElementById('item-detail-0').textContent;
    out.pair_kv = Array.prototype.map.call(document.querySelectorAll('#pair-detail-0 table.kv tr'),
      function (tr) { return [tr.children[0].textContent, tr.children[1].textContent]; });
    out.sft_charts = document.querySelectorAll('#sft-0 svg.line-chart').length;
    out.sft_text = document.getElementById('sft-0').textContent;
    out.mix_text = document.getElementById('mix-0').textContent;
    out.eval_text = document.getElementById('eval-0').textContent;
    out.synthesis_text = document.getElementById('synthesis-0').textContent;
"""
    + PROBE_END
)


def probe(page: Path, script: str = PROBE) -> tuple:
    dom, console = browser.open_page(page, script)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe wrote nothing; console: {console}"
    return json.loads(html.unescape(found.group(1))), console


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report-screenshots")
    print(f"\nreport screenshots: {folder}")
    return folder


@needs_chromium
def test_the_report_of_a_small_run_renders_every_pair_and_the_accepted_edit(tmp_path, shots):
    run = write_run(tmp_path, 7)
    page = build_run_report(run)
    assert page == run / "report.html"
    assert not (run / "report_files").exists()  # a small run's page carries its details itself
    seen, console = probe(page)
    assert console == [] and seen["errors"] == []
    manifest = json.loads((run / "synthesize" / "manifest.json").read_text())
    assert seen["rows"] == seen["total"] == manifest["counts"]["pairs"] == 7
    # the accepted rewrite is highlighted, and its title holds the text it replaced
    assert seen["marks"] == [{"text": EDIT_AFTER, "title": f"replaced (step 1): {EDIT_BEFORE}"}]
    assert seen["detail_title"].startswith("Pair p-edit")
    # z0 and one accepted step: two points on the current-z curve, two candidates' dots
    assert seen["curve_points"] == 4
    # sorting by the final score: descending first (a numeric column), then ascending
    assert seen["sorted_desc"] == sorted(seen["sorted_desc"], reverse=True) and len(seen["sorted_desc"]) == 7
    assert seen["sorted_asc"] == sorted(seen["sorted_desc"]) and seen["sorted_asc"] != seen["sorted_desc"]
    assert "sorted-desc" in seen["sorted_desc_class"]
    # filters: i % 5 == 3 is discarded (one pair of 7); only the edited pair improved
    assert seen["discarded_shown"] == 1 and seen["discarded_texts"] == ["discarded: repetition"]
    assert seen["improved_ids"] == ["p-edit"]
    # discards by reason, and ours against the authors' released trajectories, each mean with its error
    assert "Discarded, by reason" in seen["synthesis_text"] and "over_generator_context" in seen["synthesis_text"]
    assert "Ours vs the authors' released trajectories (3 pairs)" in seen["synthesis_text"]
    assert "1.2346 ± 0.0100" in seen["synthesis_text"] and "820.5 ± 30.5" in seen["synthesis_text"]
    # data is text, never markup
    assert seen["script_tags_in_x"] == 0 and "<script>alert(1)</script>" in seen["x_text"]
    # a pair's seconds say what they are: its share of the batched model calls, and its wall time in
    # flight beside the other pairs (under continuous scheduling the two differ by far)
    kv = dict(seen["pair_kv"])
    assert "seconds" not in kv and kv[MODEL_SECONDS] == "7.050" and kv[IN_FLIGHT_SECONDS] == "30.500", kv
    assert seen["sft_charts"] == 3  # loss, learning rate, throughput
    # the planner's estimate for these settings, beside the measured peak (the last step's 1.58 GiB)
    assert "estimate: total" in seen["sft_text"] and "1.58" in seen["sft_text"]
    assert "exact_dedup" in seen["mix_text"] and "dup0" in seen["mix_text"] and "exact duplicate" in seen["mix_text"]
    assert "70.00" in seen["eval_text"]  # the paper-layout table's value
    assert seen["item_rows"] == 1
    assert "clear enough imagery" in seen["item_text"] and "I should mention the snow." in seen["item_text"]
    png = browser.screenshot(page, shots / "small-run.png")
    assert png.stat().st_size > 10_000


LAZY_PROBE = (
    r"""
(function () {
  var out = {};
  var counter = document.querySelector('#synthesis-0 .count');
  out.rows_page1 = document.querySelectorAll('#synthesis-0 tr.row').length;
  out.total = parseInt(counter.getAttribute('data-total'));
  out.scripts_before = document.querySelectorAll('script[src]').length;
  document.querySelector('#synthesis-0 button.next').click();
  document.querySelector('#synthesis-0 button.next').click();
  var rows = document.querySelectorAll('#synthesis-0 tr.row');
  out.rows_page3 = rows.length;
  out.page_label = document.querySelector('#synthesis-0 .page-label').textContent;
  var last = rows[rows.length - 1];
  out.last_id = last.children[0].textContent;
  last.click();
  var tries = 0;
  var finish = function () {
    var h = document.querySelector('#pair-detail-0 h3');
    if ((!h || h.textContent.indexOf('Pair') !== 0) && tries++ < 100) return setTimeout(finish, 20);
    out.detail_title = h ? h.textContent : null;
    out.marks = document.querySelectorAll('#pair-detail-0 mark.edit').length;
    out.scripts_after = Array.prototype.map.call(document.querySelectorAll('script[src]'),
      function (s) { return s.getAttribute('src'); });
"""
    + PROBE_END
)


@needs_chromium
def test_a_large_run_pages_its_table_and_loads_details_from_the_files_beside_it(tmp_path):
    run = write_run(tmp_path, 230)
    page = build_run_report(run)
    chunks = sorted(p.name for p in (run / "report_files").iterdir())
    assert chunks == ["r0-pairs-0000.js", "r0-pairs-0001.js"]  # 200 details a file; eval's one item is inline
    seen, console = probe(page, LAZY_PROBE)
    assert console == [] and seen["errors"] == []
    assert (seen["rows_page1"], seen["total"], seen["rows_page3"]) == (100, 230, 30)
    assert seen["page_label"] == "page 3 of 3"
    # the last pair (index 229) lives in the second chunk file, loaded only when clicked
    assert seen["scripts_before"] == 0 and seen["scripts_after"] == ["report_files/r0-pairs-0001.js"]
    assert seen["last_id"] == "p-edit" and seen["detail_title"].startswith("Pair p-edit") and seen["marks"] == 1


@needs_chromium
def test_several_runs_side_by_side_link_each_run_report(tmp_path, shots):
    runs = [write_run(tmp_path / "a", 7), write_run(tmp_path / "b", 9)]
    out = tmp_path / "compare" / "report.html"
    rc = subprocess.run(
        [sys.executable, "-m", "deepwriter.report", "--html", *map(str, runs), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rc.returncode == 0, rc.stderr
    assert rc.stdout.strip().splitlines()[-1] == str(out)
    assert all((r / "report.html").is_file() for r in runs)  # each run's own report, built for the links
    script = r"""
    var links = Array.prototype.map.call(document.querySelectorAll('#ablations a'),
      function (a) { return a.getAttribute('href'); });
    document.querySelectorAll('.tabs button')[1].click();
    var pre = document.createElement('pre'); pre.id = 'probe';
    pre.textContent = JSON.stringify({links: links, rows: document.querySelectorAll('#synthesis-1 tr.row').length,
      tabs: document.querySelectorAll('.tabs button').length, errors: window.__errors});
    document.body.appendChild(pre);
    """
    seen, console = probe(out, script)
    assert console == [] and seen["errors"] == []
    assert seen["links"] == ["../a/runs/demo/run-7/report.html", "../b/runs/demo/run-9/report.html"]
    assert seen["tabs"] == 2 and seen["rows"] == 9
    browser.screenshot(out, shots / "runs-compared.png")


REPORTED_PROBE = r"""
(function () {
  var box = document.getElementById('reported-0');
  var cells = function (table) {
    return Array.prototype.map.call(table.querySelectorAll('tr'), function (tr) {
      return Array.prototype.map.call(tr.children, function (td) { return td.textContent; });
    });
  };
  var tables = document.querySelectorAll('#eval-0 table');
  var out = {box: !!box, title: box && box.querySelector('h3').textContent,
    reported: box ? cells(box.querySelector('table')) : [], own: cells(tables[0]),
    notes: box ? box.textContent : '', errors: window.__errors};
  var pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
"""


@needs_chromium
@pytest.mark.parametrize("recipe", ["ablation-no-search", "demo"])
def test_the_eval_section_shows_the_papers_figures_beside_the_runs_own(tmp_path, shots, recipe):
    run = write_run(tmp_path, 3)
    summary = json.loads((run / "eval" / "summary.json").read_text())
    summary["label"] = f"{recipe}/run-3"
    summary["recipe"] = recipe
    (run / "eval" / "summary.json").write_text(json.dumps(summary))
    page = build_run_report(run)
    seen, console = probe(page, REPORTED_PROBE)
    assert console == [] and seen["errors"] == []
    assert seen["box"] and seen["title"] == "Reported in the REER paper (not this run)"
    header, *rows = seen["reported"]
    assert header == ["Reported in the REER paper (not this run)", "LB", "HB-A", "HB-B"] + [f"WB-{d}" for d in "ABCDEF"]
    by_label = {r[0]: r[1:] for r in rows}
    # the paper's figures, to two decimals; a figure no source quotes is an empty cell, not a dash or a guess
    assert by_label["paper: DeepWriter-8B"] == ["91.28", "82.60", "87.48", "72.20", "", "", "70.60", "", "72.30"]
    assert by_label["paper: GPT-4o"][:3] == ["83.10", "83.70", "87.60"]
    if recipe == "ablation-no-search":  # the ablation row this recipe reproduces, and only that one
        assert by_label["paper ablation: − iterative search"] == ["", "", "84.40", "66.70", "", "", "65.60", "", ""]
        assert sum(label.startswith("paper ablation") for label in by_label) == 1
    else:
        assert not any(label.startswith("paper ablation") for label in by_label)
    assert "arXiv 2509.06160" in seen["notes"] and "An empty cell is a figure no source quotes." in seen["notes"]
    # the run's own table holds the run only
    assert [r[0] for r in seen["own"][1:]] == [f"{recipe}/run-3"]
    png = browser.screenshot(page, shots / f"reported-{recipe}.png", probe=browser.show_only("eval-0"))
    assert png.stat().st_size > 10_000


@needs_chromium
def test_the_report_of_an_unfinished_run_shows_what_there_is(tmp_path):
    run = write_run(tmp_path, 3)
    for stage in ("mix", "sft", "eval"):
        shutil.rmtree(run / stage)
    # a pair discarded before the search: no z0, no score, no step
    early = {"id": "p-early", "x": "x", "y": "y", "z0": None, "z_final": None, "scores": [], "steps": []}
    early.update(accepted_edits=[], tokens={}, verdict={"kept": False, "reason": "no_think"})
    with open(run / "synthesize" / "shards" / "shard-00000-of-00001.jsonl", "a") as f:
        f.write(json.dumps(early) + "\n")
    page = build_report([run])
    script = r"""
    var rows = document.querySelectorAll('#synthesis-0 tr.row');
    rows[rows.length - 1].click();
    var pre = document.createElement('pre'); pre.id = 'probe';
    pre.textContent = JSON.stringify({rows: rows.length, detail: document.getElementById('pair-detail-0').textContent,
      page: document.body.textContent, errors: window.__errors});
    document.body.appendChild(pre);
    """
    seen, console = probe(page, script)
    assert console == [] and seen["errors"] == []
    assert "The mix stage has not run." in seen["page"] and "The eval stage has not run." in seen["page"]
    assert seen["rows"] == 4
    assert "Pair p-early" in seen["detail"] and "discarded: no_think" in seen["detail"]
    assert "no search steps" in seen["detail"]


@needs_chromium
def test_a_run_submitted_to_slurm_shows_its_jobs_and_why_it_stopped(tmp_path):
    """slurm/jobs.json as deepwriter.cluster.launcher writes it after launcher.wait: a table of the jobs
    (resources, dependency, state, exit code, restarts, log) and the run's one line."""
    run = write_run(tmp_path, 2)
    jobs = [
        {"stage": "synthesize", "job_id": "41", "resources": "1 node(s) x 1 task(s), 64 CPU/task, 8 GPU/node, 2880 min",
         "after": None, "dependency": None, "state": "COMPLETED", "exit_code": "0:0", "restarts": 1,
         "log": "runs/demo/r/slurm/41_0_log.out"},
        {"stage": "mix", "job_id": "42", "resources": "1 node(s) x 1 task(s), 16 CPU/task, 240 min",
         "after": "synthesize", "dependency": "afterok:41", "state": "FAILED", "exit_code": "1:0", "restarts": 0,
         "log": "runs/demo/r/slurm/42_0_log.out"},
    ]  # fmt: skip
    servers = [  # a managed replica's own job, submitted by the synthesize job (serving.placement: slurm)
        {"group": "tiny-qwen3", "index": 0, "job_id": "40", "submitted": 1.0, "state": "CANCELLED",
         "exit_code": "0:15", "node_list": "gpu7", "log": "runs/demo/r/servers/tiny-qwen3-0.log"},
    ]  # fmt: skip
    line = "stage mix (job 42) FAILED (exit 1:0, log runs/demo/r/slurm/42_0_log.err)"
    (run / "slurm").mkdir()
    (run / "slurm" / "jobs.json").write_text(
        json.dumps(
            {"run": "demo/r", "reused": [], "jobs": jobs, "result": {"exit_code": 1, "line": line}, "servers": servers}
        )
    )
    page = build_report([run])
    script = r"""
    var sec = document.getElementById('jobs-0');
    var rows = Array.prototype.map.call(sec.querySelectorAll('tbody tr'), function (tr) {
      return Array.prototype.map.call(tr.children, function (td) { return td.textContent; });
    });
    var pre = document.createElement('pre'); pre.id = 'probe';
    pre.textContent = JSON.stringify({rows: rows, text: sec.textContent, errors: window.__errors});
    document.body.appendChild(pre);
    """
    seen, console = probe(page, script)
    assert console == [] and seen["errors"] == []
    assert seen["rows"] == [
        ["synthesize", "41", jobs[0]["resources"], "–", "COMPLETED", "0:0", "1", jobs[0]["log"]],
        ["mix", "42", jobs[1]["resources"], "synthesize (afterok:41)", "FAILED", "1:0", "0", jobs[1]["log"]],
        ["server tiny-qwen3 #0", "40", "node gpu7", "–", "CANCELLED", "0:15", "–", servers[0]["log"]],
    ]
    assert line in seen["text"] and "SLURM jobs" in seen["text"]
    assert "1 server replica job(s) submitted by them" in seen["text"]


def test_a_pipeline_run_ends_by_printing_its_report_path(tmp_path, capsys):
    from deepwriter.train import write_run_report

    run = write_run(tmp_path, 3)
    write_run_report(run)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"report: {run / 'report.html'}" and (run / "report.html").is_file()
    write_run_report(tmp_path / "no-such-run")  # a run that never started has no report, and no error
    assert capsys.readouterr().out == ""


def test_the_planner_estimate_is_the_planners_own_for_the_recorded_settings(tmp_path):
    from deepwriter.sft.memory import GiB, ModelShape, plan_memory
    from deepwriter.viewer import collect

    run = write_run(tmp_path, 3)
    memory = collect.sft(run / "sft")["memory"]
    shape = ModelShape(
        num_layers=4, hidden=256, intermediate=512, heads=4, kv_heads=2, vocab=1000, tied_embeddings=True
    )
    expected = plan_memory(shape, world_size=1, zero_stage=0, per_device_batch=2, max_length=512, grad_accum=2)
    assert memory["planned"]["total"] == pytest.approx(expected.total / GiB)
    assert memory["planned"]["activations"] == pytest.approx(expected.activations / GiB)
    assert (memory["measured_gb"], memory["measured_on"]) == (pytest.approx(1.58), "cpu")
