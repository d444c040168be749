"""Build a paper-sized SFT mix (37K records by default) from generated records of realistic lengths.

Records: pseudo-English requests (20-80 words), thinking of 1-4K words and answers of 300-2K words,
from a seeded generator. Planted: exact duplicates, near duplicates (a few words changed) and
requests copied from the real benchmark prompts (re-cased and wrapped in a new sentence) when
../shared/benchmarks is there. Prints wall time, peak memory, records/s of dedup + decontamination,
how many planted items each filter caught, and the speed of our MinHash signatures against
datasketch's standard SHA-1 path measured in the same run.

    python -m bench.mix_build [--records 37000] [--num-proc 2] [--tokenize-sample 300]
                              [--tokenizer smollm2-135m|tiny-qwen3]
    python -m bench.mix_build --stage     # the whole mix stage, files in and dataset out

`--stage` is the end-to-end figure: the records are written as a synthesis shard and an
OpenThoughts-style conversations file (2.5% more than needed, for the planted items the filters
remove), and `deepwriter.mix.stage.run` with the `full` recipe's mix settings (20K + 17K = 37K,
strict) loads them, builds the mix with every record tokenised, and writes the dropped lists, the
histograms, the data card and the Hugging Face dataset.

Token counting is the slow part on 2 cores, so by default it is timed on a sample and the full
build runs with a stand-in that counts every record as fitting; `--tokenize-sample 0` tokenises all
records inside the build, which is the end-to-end figure. The default tokenizer is SmolLM2's real
49K-entry BPE (the embedded model, converted under ~/.cache/deepwriter by `make demo`); Qwen3's own
tokenizer cannot be downloaded here. tiny-qwen3's 1K vocabulary splits words into many more pieces
and is much slower per record.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "benchmarks"


def _vocab(rng: np.random.Generator, size: int = 6000) -> np.ndarray:
    syll = ["ka", "lo", "mi", "ne", "to", "ra", "su", "vi", "de", "po", "an", "el", "or", "un", "is", "th", "er", "st"]
    words = {"".join(rng.choice(syll, rng.integers(1, 4))) for _ in range(size * 3)}
    common = ["the", "a", "of", "and", "to", "in", "I", "will", "it", "that", "is", "with", "for", "my", "reader"]
    return np.array(common + sorted(words)[:size], dtype=object)


class TextGen:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.vocab = _vocab(self.rng)
        ranks = np.arange(1, len(self.vocab) + 1)
        self.p = (1.0 / ranks) / (1.0 / ranks).sum()  # Zipf-like word frequencies

    def text(self, n_words: int) -> str:
        ids = self.rng.choice(len(self.vocab), size=n_words, p=self.p)
        ws = self.vocab[ids].tolist()
        for i in range(12, n_words, 17):  # sentences, so that the text tokenises like prose
            ws[i] = ws[i] + "."
        return " ".join(ws)


def _benchmark_prompts():
    if not SHARED.is_dir():
        return None
    from deepwriter.config.root import expand
    from deepwriter.eval.benchmarks import benchmark_prompts
    from deepwriter.testing.repo import compose_typed

    cfg = compose_typed(
        "eval=full",
        f"eval.benchmarks.hellobench.path={SHARED}/hellobench",
        f"eval.benchmarks.longbench_write.path={SHARED}/longbench_write/longbench_write.jsonl",
        f"eval.benchmarks.writingbench.path={SHARED}/writingbench/length_subset.jsonl",
    )
    return benchmark_prompts(cfg.eval, expand(cfg.paths.data_dir))


def make_records(n: int, n_synth: int, seed: int, bench: dict | None, rates=(0.01, 0.01, 0.005)):
    gen = TextGen(seed)
    rnd = random.Random(seed)
    exact_rate, near_rate, cont_rate = rates
    prompts = [p for ps in (bench or {}).values() for p in ps]
    synth, public, planted = [], [], {"exact": set(), "near": set(), "contaminated": set()}
    made = []  # every record so far, for planting copies
    from tqdm.auto import tqdm

    for i in tqdm(range(n), desc="generate", unit="rec", mininterval=2.0):
        kind_list = synth if i < n_synth else public
        rid = f"{'s' if i < n_synth else 'p'}{i:06d}"
        u = rnd.random()
        if made and u < exact_rate:
            src = rnd.choice(made)
            rec = dict(src, id=rid)
            planted["exact"].add(rid)
        elif made and u < exact_rate + near_rate:
            src = rnd.choice(made)
            ys = src["y"].split()
            for _ in range(max(1, len(ys) // 100)):  # ~1% of the answer's words changed
                ys[rnd.randrange(len(ys))] = "changed"
            rec = dict(src, id=rid, y=" ".join(ys), think=gen.text(rnd.randint(1000, 4000)))
            planted["near"].add(rid)
        else:
            x = "Write " + gen.text(rnd.randint(20, 80))
            if prompts and u < exact_rate + near_rate + cont_rate:
                x = "Hello! Please help with this task.\n" + rnd.choice(prompts).upper()
                planted["contaminated"].add(rid)
            rec = {
                "id": rid,
                "x": x,
                "think": gen.text(rnd.randint(1000, 4000)),
                "y": gen.text(rnd.randint(300, 2000)),
                "category": rnd.choice(["creative & narrative", "essay & argument", "business correspondence"]),
                "source": "synthetic" if i < n_synth else "public-bench",
            }
        if i >= n_synth:
            rec["source"], rec["category"] = "public-bench", "reasoning"
        kind_list.append(rec)
        made.append(rec)
    return synth, public, planted


class _NoTok:
    """Stand-in tokenizer: every record counts as 1 token, so the length filter keeps all."""

    def apply_chat_template(self, msgs, tokenize=False):
        return ""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[0]] * len(texts)}


def _signature_baseline(records, cfg) -> tuple[float, float]:
    """Seconds for MinHash signatures of `records`: ours, and datasketch's standard SHA-1 path."""
    from datasketch import MinHash

    from deepwriter.mix.dedup import NearDuplicateIndex
    from deepwriter.pairs.text import words

    idx = NearDuplicateIndex(cfg)
    t = time.perf_counter()
    for r in records:
        idx.signature(r["x"] + "\n" + r["y"])
    ours = time.perf_counter() - t
    t = time.perf_counter()
    k = cfg.shingle_words
    for r in records:
        ws = words(r["x"] + "\n" + r["y"], cfg.max_words)
        m = MinHash(num_perm=cfg.num_perm, seed=1)
        m.update_batch([" ".join(ws[i : i + k]).encode() for i in range(max(1, len(ws) - k + 1))])
    return ours, time.perf_counter() - t


def _write_stage_inputs(work: Path, seed: int, bench, n_synth: int, n_public: int) -> dict:
    """Generate the records and write them as a synthesis shard and an OpenThoughts-style file;
    returns what was planted. Run in a child process, so that the stage's memory is measured alone."""
    import json

    from deepwriter.synthesis import store

    synth, public, planted = make_records(n_synth + n_public, n_synth, seed, bench)
    shard = store.shard_path(work / "synthesize", 0, 1)
    shard.parent.mkdir(parents=True)
    with open(shard, "w") as f:
        for r in synth:
            f.write(
                json.dumps(
                    {
                        "id": r["id"],
                        "x": r["x"],
                        "y": r["y"],
                        "z0": r["think"],
                        "z_final": r["think"],
                        "category": r["category"],
                        "verdict": {"kept": True, "reason": None},
                    }
                )
                + "\n"
            )
    with open(work / "openthoughts.jsonl", "w") as f:
        for r in public:
            turn = (
                f"<|begin_of_thought|>\n\n{r['think']}\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n"
                f"{r['y']}\n\n<|end_of_solution|>"
            )
            f.write(
                json.dumps(
                    {
                        "id": r["id"],
                        "conversations": [{"from": "user", "value": r["x"]}, {"from": "assistant", "value": turn}],
                    }
                )
                + "\n"
            )
    counts = {k: len(v) for k, v in planted.items()}
    (work / "planted.json").write_text(json.dumps(counts))
    return counts


class PeakMemory:
    """Peak RSS of this process, and peak PSS of it plus its children (tokeniser workers, whose
    copy-on-write pages would be counted twice in a sum of RSS), sampled every 0.5 s."""

    def __enter__(self) -> "PeakMemory":
        import threading

        import psutil

        self.self_peak = self.tree_peak = 0
        self._stop = threading.Event()
        me = psutil.Process()

        def sample():
            while not self._stop.is_set():
                try:
                    own = me.memory_info().rss
                    # PSS: pages the forked workers share with this process are counted once.
                    tree = me.memory_full_info().pss + sum(
                        c.memory_full_info().pss for c in me.children(recursive=True)
                    )
                except psutil.Error:
                    continue
                self.self_peak, self.tree_peak = max(self.self_peak, own), max(self.tree_peak, tree)
                self._stop.wait(0.5)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def stage_end_to_end(args, bench) -> None:
    import json
    import multiprocessing

    from deepwriter.core.contract import StageContext
    from deepwriter.mix import stage as mix_stage
    from deepwriter.testing.repo import compose_typed
    from deepwriter.tracking.runs import Tracker

    n_synth, n_public = round(20000 * 1.03), round(17000 * 1.03)  # the filters remove ~2.5% (planted)
    work = Path(tempfile.mkdtemp(prefix="dw-mix-stage-"))
    t0 = time.perf_counter()
    child = multiprocessing.get_context("fork").Process(
        target=_write_stage_inputs, args=(work, args.seed, bench, n_synth, n_public)
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"generating the inputs failed (exit {child.exitcode})")
    planted = json.loads((work / "planted.json").read_text())
    shard = next((work / "synthesize" / "shards").glob("*.jsonl"))
    size = (shard.stat().st_size + (work / "openthoughts.jsonl").stat().st_size) / 2**30
    print(f"generated inputs in {time.perf_counter() - t0:.0f} s", flush=True)
    b = SHARED
    cfg = compose_typed(
        "+recipe=full",
        f"model@models.student={args.tokenizer}",
        f"paths.cache_dir={Path(args.cache_dir).expanduser()}",
        f"data.public.path={work / 'openthoughts.jsonl'}",
        "+data.public.fields.id=id",
        f"data.mix.num_proc={args.num_proc}",
        f"eval.benchmarks.hellobench.path={b}/hellobench",
        f"eval.benchmarks.longbench_write.path={b}/longbench_write/longbench_write.jsonl",
        f"eval.benchmarks.writingbench.path={b}/writingbench/length_subset.jsonl",
    )
    out = work / "mix"
    out.mkdir()
    print(
        f"input: {n_synth} trajectories + {n_public} public conversations, {size:.2f} GiB of JSONL; "
        f"mix {cfg.data.mix.synthetic} + {cfg.data.mix.public} = {cfg.data.mix.total}, max_length {cfg.sft.max_length}",
        flush=True,
    )
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        res = mix_stage.run(
            cfg, StageContext("mix", out, {"synthesize": work / "synthesize"}, work, Tracker(None), "bench")
        )
    wall = time.perf_counter() - t0
    c, m = res.counts, res.metrics
    print("\nmix stage end to end (load, dedup, decontaminate, tokenise all, write dataset + card + plots):")
    print(f"  wall                     {wall:8.1f} s = {wall / 60:.1f} min")
    for k in ("dedup_s", "decontam_s", "tokenize_s"):
        if k in m:
            print(f"  {k:<24} {m[k]:8.1f} s")
    print(
        f"  records in               {n_synth + n_public:8d}  -> mix {c['total']} "
        f"({c.get('synthetic')} synthetic + {c.get('public')} public)"
    )
    print(f"  records/s end to end     {(n_synth + n_public) / wall:8.0f}")
    print(
        f"  peak RSS                 {mem.self_peak / 2**30:8.2f} GiB (the stage's process), "
        f"{mem.tree_peak / 2**30:.2f} GiB PSS with its tokeniser workers"
    )
    print(
        f"  dataset on disk          "
        f"{sum(p.stat().st_size for p in (out / 'dataset').rglob('*') if p.is_file()) / 2**30:8.2f} GiB"
    )
    removed = {p.stem: sum(1 for _ in open(p)) for p in (out / "dropped").glob("*.jsonl")}
    print(f"  removed by filter        {removed}; planted {planted}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=37000)
    ap.add_argument("--synthetic", type=int, default=None, help="default: 20/37 of the records")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=16384)
    ap.add_argument(
        "--tokenize-sample",
        type=int,
        default=300,
        help="time token counting on this many records only (0: tokenise every record in the build)",
    )
    ap.add_argument("--tokenizer", default="smollm2-135m", choices=["smollm2-135m", "tiny-qwen3"])
    ap.add_argument(
        "--cache-dir",
        default=os.environ.get("DEEPWRITER_CACHE", "~/.cache/deepwriter"),
        help="where the embedded model's converted copy lives",
    )
    ap.add_argument("--stage", action="store_true", help="run the whole mix stage end to end instead")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))

    from deepwriter.config.data import MixConfig
    from deepwriter.llm.models import load_tokenizer
    from deepwriter.mix.build import build_mix
    from deepwriter.testing.repo import compose_typed

    n_synth = args.synthetic if args.synthetic is not None else round(args.records * 20 / 37)
    t_all = time.perf_counter()
    bench = _benchmark_prompts()
    if args.stage:
        return stage_end_to_end(args, bench)
    t0 = time.perf_counter()
    synth, public, planted = make_records(args.records, n_synth, args.seed, bench)
    t_gen = time.perf_counter() - t0
    n_words = sum(len(r["think"].split()) + len(r["y"].split()) for r in synth[:500] + public[:500]) / max(
        1, len(synth[:500] + public[:500])
    )

    cfg = MixConfig(num_proc=args.num_proc, seed=args.seed)
    ours, baseline = _signature_baseline((synth + public)[:300], cfg.dedup)

    from deepwriter.mix.build import token_lengths

    tcfg = compose_typed(f"model@models.student={args.tokenizer}").models.student
    cache = (
        Path(tempfile.mkdtemp(prefix="dw-bench-"))
        if args.tokenizer == "tiny-qwen3"
        else Path(args.cache_dir).expanduser()
    )
    real_tok = load_tokenizer(tcfg, cache)
    t_tok_sample = None
    if args.tokenize_sample:
        sample = (synth + public)[: args.tokenize_sample]
        t0 = time.perf_counter()
        token_lengths(sample, real_tok, args.num_proc, with_think=False)
        t_tok_sample = (time.perf_counter() - t0, len(sample))
        tok = None
    else:
        tok = real_tok
    if tok is None:
        tok = _NoTok()

    t0 = time.perf_counter()
    res = build_mix(
        synth,
        public,
        cfg,
        taxonomy={},
        benchmark_prompts=bench or {},
        tokenizer=tok,
        max_length=args.max_length,
        strict=True,
    )
    t_mix = time.perf_counter() - t0
    wall = time.perf_counter() - t_all

    removed = {k: {d["id"] for d in v} for k, v in res.removed.items()}
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    dd = res.timings["dedup_s"] + res.timings["decontam_s"]
    n_in = args.records
    print(
        f"\nmix_build: {n_in} records ({n_synth} synthetic), ~{n_words:.0f} words of thinking+answer each, "
        f"{sum(map(len, (bench or {}).values()))} benchmark prompts"
    )
    print(f"  generate records         {t_gen:8.1f} s")
    print(f"  exact + near dedup       {res.timings['dedup_s']:8.1f} s")
    print(f"  decontamination          {res.timings['decontam_s']:8.1f} s")
    if t_tok_sample:
        secs, k = t_tok_sample
        print(
            f"  token lengths (sample)   {secs:8.1f} s for {k} records = {k / secs:.0f} records/s "
            f"(num_proc={args.num_proc}, {args.tokenizer} tokenizer; all {n_in}: ~{n_in / (k / secs) / 60:.0f} min)"
        )
    else:
        print(
            f"  token lengths            {res.timings['tokenize_s']:8.1f} s  "
            f"(num_proc={args.num_proc}, {args.tokenizer} tokenizer)"
        )
    print(f"  build_mix total          {t_mix:8.1f} s   wall (all) {wall:.1f} s")
    print(f"  dedup + decontamination  {n_in / dd:8.0f} records/s")
    print(f"  peak RSS                 {peak_self:8.0f} MiB (this process), {peak_children:.0f} MiB (largest worker)")
    for what, filt in (("exact", "exact_duplicate"), ("near", "near_duplicate"), ("contaminated", "contaminated")):
        got = removed.get(filt, set())
        print(
            f"  planted {what:<13} {len(planted[what]):5d}  caught {len(planted[what] & got):5d}  "
            f"other records removed by this filter {len(got - planted[what]):5d}"
        )
    if isinstance(tok, _NoTok):
        # Every record counted as one token: the length filter saw no real lengths, so it removed
        # nothing by construction. Say so instead of printing a 0 that looks measured.
        print(
            f"  removed as too long      not measured (token counting stubbed; --tokenize-sample 0 "
            f"measures it against > {args.max_length} tokens)"
        )
    else:
        print(f"  removed as too long      {len(removed.get('too_long', ())):5d} (> {args.max_length} tokens)")
    print(f"  final mix                {res.counts['total']} records")
    print(
        f"  MinHash signatures, 300 records: ours {ours:.2f} s vs datasketch SHA-1 update_batch {baseline:.2f} s "
        f"-> {baseline / ours:.1f}x"
    )


if __name__ == "__main__":
    main()
