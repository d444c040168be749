"""What a recipe will cost, before anything runs.

    python -m deepwriter.plan +recipe=NAME [calibrate=runs/NAME/RUN_ID] [overrides]

Per stage of the recipe: model calls, prompt/completion/scored tokens and GPU-hours on the hardware of
`plan.hardware` (conf/hardware/, default 8xh100), SFT FLOPs and GPU-hours at an MFU assumption with the SFT
memory planner's per-GPU estimate, and the judge's calls and dollars from `eval.judge.prices`.

Without `calibrate=` the synthesis figures are the worst case the config allows (every search runs
`max_steps` steps, every generation reaches its max_new_tokens); the data sizes the config does not
bound come from `plan.workload`. With `calibrate=RUN_DIR` the finished synthesis records of that run
are measured (tokens and model seconds per pair) and extrapolated to the whole pair count, with the
10th-90th percentile pair as the range. Every figure that is not read from the config is printed with
its source.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from deepwriter.cluster.launcher import graph_text, job_graph, server_graph_text
from deepwriter.cluster.requests import serves_as_jobs
from deepwriter.config.compose import compose
from deepwriter.config.cost import Figure
from deepwriter.config.llm import Backend
from deepwriter.config.root import STAGE_ORDER, ConfigError, RootConfig, split_options, to_typed
from deepwriter.core.contract import read_manifest
from deepwriter.core.files import resolve_data_path
from deepwriter.core.records import read_records
from deepwriter.eval.benchmarks import module_for
from deepwriter.pipeline.runner import stage_arrays, stage_roles
from deepwriter.serving.stages import serving_layout
from deepwriter.sft.memory import QWEN3_8B, GiB, ModelShape, plan_from_config
from deepwriter.synthesis import prompts

OPTIONS = ("calibrate",)


@dataclass
class Section:
    title: str
    rows: List[Tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, value: Any) -> None:
        self.rows.append((name, value if isinstance(value, str) else _num(value)))


@dataclass
class Projection:
    sections: List[Section] = field(default_factory=list)
    assumptions: List[Tuple[str, str, str]] = field(default_factory=list)  # (name, value, source)
    totals: Dict[str, float] = field(default_factory=dict)

    def assume(self, name: str, fig: Figure, unit: str = "") -> float:
        if not any(a[0] == name for a in self.assumptions):
            self.assumptions.append((name, f"{_num(fig.value)}{unit}", fig.source))
        return float(fig.value)

    def text(self) -> str:
        out: List[str] = []
        for s in self.sections:
            out.append(f"== {s.title}")
            width = max((len(n) for n, _ in s.rows), default=0)
            out += [f"  {n.ljust(width)}  {v}" for n, v in s.rows]
        out.append("== assumptions (value: source)")
        out += [f"  {n} = {v}: {src}" for n, v, src in self.assumptions]
        return "\n".join(out)


def _num(x: float) -> str:
    if isinstance(x, int) or float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:,.2f}" if abs(x) >= 0.01 else f"{x:.3g}"


# --- synthesis ------------------------------------------------------------------------------------


def template_tokens(cfg: RootConfig, chars_per_token: float) -> Dict[str, float]:
    """Tokens of each synthesis prompt without x, y and z (the prompts rendered with them empty)."""

    s = cfg.synthesis
    chars = lambda msgs: sum(len(m["content"]) for m in msgs)
    initial = chars(prompts.initial_messages("", "", "en", s.reflection, s.system_prompt)) + len(
        prompts.initial_prefill("Alright, the user")
    )
    refine = chars(
        prompts.refine_messages("", "", "", "", "", "en", s.reflection, s.refine_analysis, s.system_prompt)
    ) + len(prompts.refine_prefill("en", s.refine_analysis))
    scorer = chars(prompts.scorer_messages("", "en", True, s.system_prompt)) + len(prompts.scorer_prefix("", ""))
    return {
        k: math.ceil(v / chars_per_token) for k, v in (("initial", initial), ("refine", refine), ("scorer", scorer))
    }


def _local_rows(src: Any) -> Optional[int]:
    """Rows of a data source's local JSONL file (its limit applied), or None when it has no local file."""

    if not src.path:
        return None
    path = resolve_data_path(src.path)
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        rows = sum(1 for line in f if line.strip())
    return min(rows, src.limit) if src.limit else rows


def pair_count(cfg: RootConfig) -> Tuple[int, str]:
    """The pairs searched: set in plan.workload, else what the config says, else the mix's synthetic count."""
    w = cfg.plan.workload
    if w.pairs:
        return w.pairs, "plan.workload.pairs"
    if cfg.synthesis.limit:
        return cfg.synthesis.limit, "synthesis.limit"
    if cfg.data.pairs.limit:
        return cfg.data.pairs.limit, "data.pairs.limit"
    rows = _local_rows(cfg.data.pairs)
    if rows is not None:
        return rows, f"rows of {cfg.data.pairs.path}"
    if cfg.data.mix.synthetic:
        return cfg.data.mix.synthetic, "data.mix.synthetic: a searched pair per synthetic sample, discards not counted"
    raise ConfigError(
        "plan.workload.pairs: the number of pairs is unknown (no synthesis.limit, data.pairs.limit, local "
        "data.pairs.path or data.mix.synthetic); set plan.workload.pairs=N"
    )


def mix_size(cfg: RootConfig) -> Tuple[int, str]:
    m = cfg.data.mix
    if m.total is not None:
        return m.total, "data.mix.total"
    synthetic = m.synthetic if m.synthetic is not None else pair_count(cfg)[0]
    public = m.public if m.public is not None else (_local_rows(cfg.data.public) or 0)
    return synthetic + public, f"at most {synthetic:,} synthetic + {public:,} public (data.mix.total is null)"


def synthesis_bounds(cfg: RootConfig, tpl: Dict[str, float], x: float, y: float) -> Dict[str, float]:
    """Worst case of one pair's search: z0 and every rewrite at their max_new_tokens, max_steps steps.

    z grows by at most refine.max_new_tokens per accepted rewrite (a rewrite replaces a segment), and a
    prompt never exceeds the generator's context less the tokens it may generate."""
    s = cfg.synthesis
    k, init, ref = s.num_candidates, s.initial.max_new_tokens, s.refine.max_new_tokens
    steps = s.max_steps if s.search else 0
    gen_ctx, sco_ctx = cfg.models.generator.max_context, cfg.models.scorer.max_context
    prompt = min(tpl["initial"] + x + y, gen_ctx - init)
    scored = min(tpl["scorer"] + x + init + y, sco_ctx)
    for step in range(1, steps + 1):
        z = init + (step - 1) * ref
        prompt += k * min(tpl["refine"] + x + y + z, gen_ctx - ref)
        scored += k * min(tpl["scorer"] + x + z + ref + y, sco_ctx)
    return {
        "generate_calls": 1 + steps,
        "samples": 1 + steps * k,
        "score_calls": 1 + steps,
        "score_requests": 1 + steps * k,
        "prompt_tokens": prompt,
        "completion_tokens": init + steps * k * ref,
        "scored_tokens": scored,
        "target_tokens": (1 + steps * k) * y,
    }


def _gpu_hours(tokens: float, per_s: float) -> float:
    return tokens / per_s / 3600 if per_s > 0 else 0.0


def synthesis_section(cfg: RootConfig, p: Projection) -> Section:
    w = cfg.plan.workload
    cpt = p.assume("workload.chars_per_token", w.chars_per_token)
    x = p.assume("workload.request_tokens", w.request_tokens, " tokens")
    y = p.assume("workload.answer_tokens", w.answer_tokens, " tokens")
    n, n_src = pair_count(cfg)
    per = synthesis_bounds(cfg, template_tokens(cfg, cpt), x, y)
    gen, sco = _throughput(cfg, p, "generator"), _throughput(cfg, p, "scorer")
    sec = Section("synthesize (worst case from config bounds)")
    sec.add("pairs", f"{n:,}  ({n_src})")
    steps = cfg.synthesis.max_steps if cfg.synthesis.search else 0
    sec.add(
        "per pair",
        f"{per['generate_calls']} generate calls ({per['samples']} samples), "
        f"{per['score_calls']} score calls ({per['score_requests']} requests): 1 for z0 + {steps} steps "
        f"x {cfg.synthesis.num_candidates} candidates",
    )
    for key in ("generate_calls", "score_calls", "prompt_tokens", "completion_tokens", "scored_tokens"):
        sec.add(key.replace("_", " "), per[key] * n)
    gen_h = _gpu_hours(per["completion_tokens"] * n, gen[0]) + _gpu_hours(per["prompt_tokens"] * n, gen[1])
    sco_h = _gpu_hours(per["scored_tokens"] * n, sco[1])
    _hours(sec, p, cfg, {"generator": gen_h, "scorer": sco_h}, "synthesize")
    return sec


def _throughput(cfg: RootConfig, p: Projection, role: str) -> Tuple[float, float]:
    t = cfg.plan.hardware.throughput.get(role)
    if t is None:
        raise ConfigError(f"plan.hardware.throughput.{role}: missing; the hardware needs the {role}'s throughput")
    p.assume(f"hardware.throughput.{role}.params_b", t.params_b, "B")
    return (
        p.assume(f"hardware.throughput.{role}.decode_tokens_per_s", t.decode_tokens_per_s, " tokens/s/GPU"),
        p.assume(f"hardware.throughput.{role}.prefill_tokens_per_s", t.prefill_tokens_per_s, " tokens/s/GPU"),
    )


def _hours(sec: Section, p: Projection, cfg: RootConfig, by_role: Dict[str, float], stage: str) -> None:
    count = cfg.plan.hardware.count
    for role, h in by_role.items():
        sec.add(f"GPU-hours, {role}", h)
    total = sum(by_role.values())
    sec.add(f"wall-clock on {count}x {cfg.plan.hardware.gpu}", f"{total / count:,.1f} h (every GPU busy)")
    p.totals[stage] = total


# --- calibration ----------------------------------------------------------------------------------


def read_synthesis_records(run_dir: Path) -> List[Dict[str, Any]]:
    if not run_dir.is_dir():
        raise ConfigError(f"calibrate: no run folder at {run_dir}")
    shards = run_dir / "synthesize" / "shards"
    records = [r for f in sorted(shards.glob("*.jsonl")) for r in read_records(f) if "tokens" in r]
    if not records:
        raise ConfigError(f"calibrate: no synthesis records under {shards}")
    return records


def _measured_throughput(run_dir: Path) -> Optional[Dict[str, float]]:
    """Throughput and utilisation the calibration run's synthesis stage recorded, if any."""

    return ((read_manifest(run_dir / "synthesize") or {}).get("metrics") or {}).get("fleet")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    v = sorted(values)
    at = (len(v) - 1) * q
    lo, hi = math.floor(at), math.ceil(at)
    return v[lo] + (v[hi] - v[lo]) * (at - lo)


def calibration(records: List[Dict[str, Any]], n: int) -> Dict[str, Dict[str, float]]:
    """Per-pair statistics of each measure and its extrapolation to n pairs (n x p10, mean, p90)."""
    measures = {
        "prompt_tokens": [r["tokens"].get("prompt", 0) for r in records],
        "completion_tokens": [r["tokens"].get("completion", 0) for r in records],
        "target_tokens": [r["tokens"].get("target", 0) for r in records],
        # what the scorer read (context + target of every scored trajectory); 0 in older records
        "scorer_requests": [r["tokens"].get("scorer_requests", 0) for r in records],
        "scorer_tokens": [r["tokens"].get("scorer", 0) for r in records],
        "steps": [len(r.get("steps") or []) for r in records],
        "model_seconds": [
            (r.get("timings") or {}).get("generate_s", 0.0) + (r.get("timings") or {}).get("score_s", 0.0)
            for r in records
        ],
    }
    out = {}
    for name, vals in measures.items():
        mean = sum(vals) / len(vals)
        p10, p90 = percentile(vals, 0.1), percentile(vals, 0.9)
        out[name] = {
            "mean": mean,
            "min": min(vals),
            "max": max(vals),
            "p10": p10,
            "p90": p90,
            "total_low": n * p10,
            "total": n * mean,
            "total_high": n * p90,
        }
    return out


def calibrated_section(cfg: RootConfig, p: Projection, run_dir: Path) -> Section:
    records = read_synthesis_records(run_dir)
    n, n_src = pair_count(cfg)
    cal = calibration(records, n)
    sec = Section(f"synthesize (calibrated from {len(records)} records of {run_dir})")
    sec.add("pairs", f"{n:,}  ({n_src})")
    for name, c in cal.items():
        sec.add(
            name.replace("_", " "),
            f"per pair mean {_num(c['mean'])} (min {_num(c['min'])}, p10 {_num(c['p10'])}, p90 {_num(c['p90'])}, "
            f"max {_num(c['max'])}) -> total {_num(c['total'])} [{_num(c['total_low'])} .. {_num(c['total_high'])}]",
        )
    hours = cal["model_seconds"]
    sec.add(
        "model hours as measured",
        f"{_num(hours['total'] / 3600)} [{_num(hours['total_low'] / 3600)} .. "
        f"{_num(hours['total_high'] / 3600)}] (on the calibration run's hardware and batch size)",
    )
    gen, sco = _throughput(cfg, p, "generator"), _throughput(cfg, p, "scorer")

    def gen_hours(at: str) -> float:
        return _gpu_hours(cal["completion_tokens"][at], gen[0]) + _gpu_hours(cal["prompt_tokens"][at], gen[1])

    def sco_hours(at: str) -> float:
        return _gpu_hours(cal["scorer_tokens"][at], sco[1])

    for role, hours_at in (("generator", gen_hours), ("scorer", sco_hours)):
        sec.add(
            f"GPU-hours, {role}",
            f"{_num(hours_at('total'))} [{_num(hours_at('total_low'))} .. {_num(hours_at('total_high'))}] "
            "(measured tokens at the hardware's throughput)",
        )
    if not cal["scorer_tokens"]["max"]:
        sec.add("note", "these records do not count the scorer's tokens (written before they were counted)")
    measured = _measured_throughput(run_dir)
    if measured:
        sec.add(
            "measured throughput",
            f"{_num(measured['pairs_per_min'])} pairs/min over {_num(measured['wall_s'])} s; generator busy "
            f"{measured['generator_busy_share']:.0%}, scorer busy {measured['scorer_busy_share']:.0%} "
            "(the calibration run's last synthesis)",
        )
    total = gen_hours("total") + sco_hours("total")
    count = cfg.plan.hardware.count
    sec.add(f"wall-clock on {count}x {cfg.plan.hardware.gpu}", f"{total / count:,.1f} h (every GPU busy)")
    p.totals["synthesize"] = total
    p.assumptions.append(
        ("calibration range", "10th-90th percentile pair x pairs", "assumption: other pairs are like those measured")
    )
    return sec


# --- mix, sft, eval -------------------------------------------------------------------------------


def mix_section(cfg: RootConfig, p: Projection) -> Section:
    total, src = mix_size(cfg)
    sec = Section("mix (CPU only)")
    sec.add("records", f"{total:,} ({src})")
    sec.add("GPU-hours", 0)
    p.totals["mix"] = 0.0
    return sec


def student_shape(cfg: RootConfig):
    """The student's shape: a known one by name, else its HF config from local files; None if neither."""

    name = (cfg.models.student.path or cfg.models.student.name).lower()
    if "qwen3-8b" in name:
        return QWEN3_8B, "Qwen3-8B config.json (deepwriter.sft.memory.QWEN3_8B)"
    try:
        from transformers import AutoConfig

        hf = AutoConfig.from_pretrained(cfg.models.student.path, local_files_only=True)
        return ModelShape.from_hf_config(hf), f"{cfg.models.student.path} config.json (local)"
    except Exception:
        return None, ""


def sft_section(cfg: RootConfig, p: Projection) -> Section:
    s, hw = cfg.sft, cfg.plan.hardware
    sec = Section("sft")
    samples, _ = mix_size(cfg)
    if cfg.plan.workload.sft_sample_tokens is not None:
        per = p.assume("workload.sft_sample_tokens", cfg.plan.workload.sft_sample_tokens, " tokens")
    else:
        per = p.assume("sft sample tokens", Figure(s.max_length, "bound: sft.max_length (every sample at the cut)"))
    shape, shape_src = student_shape(cfg)
    if shape is not None:
        params = shape.params()
        p.assumptions.append(("student params", f"{params / 1e9:.2f}B", f"sft.memory.ModelShape of {shape_src}"))
    elif "student" in hw.throughput:
        params = p.assume("hardware.throughput.student.params_b", hw.throughput["student"].params_b, "B") * 1e9
        sec.add("params", f"{params / 1e9:g}B from plan.hardware.throughput.student (no student config.json offline)")
    else:
        raise ConfigError("plan.hardware.throughput.student: missing; the SFT FLOPs need the student's size")
    tokens = samples * s.epochs * per
    if s.max_steps > 0:
        tokens = min(tokens, s.max_steps * (s.global_batch_size or 1) * per)
    flops = 6 * params * tokens
    peak = p.assume("hardware.peak_bf16_tflops", hw.peak_bf16_tflops, " TFLOP/s") * 1e12
    mfu = p.assume("hardware.sft_mfu", hw.sft_mfu)
    p.assumptions.append(("sft FLOPs", "6 x params x tokens", "Kaplan et al. 2020; attention's s^2 term not counted"))
    sec.add("tokens", f"{_num(tokens)} = {samples:,} samples x {s.epochs:g} epochs x {_num(per)} tokens")
    sec.add("FLOPs", f"{flops:.3g}")
    hours = flops / (peak * mfu) / 3600 if peak * mfu else 0.0
    sec.add("GPU-hours", hours)
    sec.add(f"wall-clock on {hw.count}x {hw.gpu}", f"{hours / hw.count:,.1f} h")
    p.totals["sft"] = hours
    if shape is None:
        sec.add("memory per GPU", "unknown: the student's config.json is not available offline")
        return sec
    world = hw.count
    accum = s.gradient_accumulation_steps or max(1, (s.global_batch_size or world) // (s.per_device_batch_size * world))
    mem = plan_from_config(s, shape, world, accum)
    gpu_gb = p.assume("hardware.memory_gb", hw.memory_gb, " GB")
    fits = "fits" if mem.total <= gpu_gb * GiB else "DOES NOT FIT"
    sec.add("memory per GPU", f"{mem.total / GiB:.1f} GiB of {gpu_gb:g} ({fits}); the planner's breakdown:")
    sec.rows += [("", line) for line in mem.describe(gpu_gb).splitlines()]
    return sec


def judge_price(cfg: RootConfig, model=None) -> Tuple[str, Optional[Any], str]:
    """The judge's (models.judge, or `model`: a panel judge's) model id as the eval stage names it, and
    its price (exact, else the longest key that prefixes the id, which the eval stage itself would not find)."""

    j = model or cfg.models.judge
    model_id = j.name if j.backend == Backend.transformers else (j.endpoint.model or j.path)
    prices = cfg.eval.judge.prices
    if model_id in prices:
        return model_id, prices[model_id], f"eval.judge.prices[{model_id!r}]"
    near = sorted((k for k in prices if model_id.startswith(k)), key=len)
    if near:
        return (
            model_id,
            prices[near[-1]],
            (
                f"eval.judge.prices[{near[-1]!r}] (prefix of {model_id!r}; the eval stage looks the id up exactly "
                f"and would count $0: add {model_id!r} to eval.judge.prices)"
            ),
        )
    return model_id, None, f"no price for {model_id!r} in eval.judge.prices: cost counted as $0"


def eval_section(cfg: RootConfig, p: Projection) -> Section:
    w = cfg.plan.workload
    sec = Section("eval (worst case: every answer at max_new_tokens)")
    stu = _throughput(cfg, p, "student")
    jp = p.assume("workload.judge_prompt_tokens", w.judge_prompt_tokens, " tokens")
    gens = gen_tokens = calls = j_in = j_out = 0.0
    reasks = cfg.eval.judge.max_reasks
    for name, b in cfg.eval.benchmarks.items():
        if not b.enabled:
            continue
        bench = module_for(name, b)
        kind = bench.KIND
        rows = _local_rows(b)
        if b.limit:
            items = b.limit
        elif rows is not None:
            items = rows
        else:
            items = p.assume(
                f"workload.benchmark_items.{kind}", w.benchmark_items.get(kind) or Figure(*bench.PUBLISHED_ITEMS)
            )
        per_item = p.assume(
            f"workload.judge_calls_per_item.{kind}",
            w.judge_calls_per_item.get(kind) or Figure(*bench.JUDGE_CALLS_PER_ITEM),
        )
        answer = min(b.max_new_tokens, b.judge.max_answer_tokens or b.max_new_tokens)
        c = items * per_item * cfg.eval.judge_samples  # each task judged judge_samples times
        gens += items
        gen_tokens += items * b.max_new_tokens
        calls += c
        j_in += c * (jp + answer)
        j_out += c * (b.judge.max_new_tokens or cfg.eval.judge.max_new_tokens)
        sec.add(f"{name}", f"{_num(items)} items, {_num(c)} judge calls, answers <= {b.max_new_tokens:,} tokens")
    sec.add("generations (model under test)", gens)
    sec.add("generated tokens", gen_tokens)
    samples = cfg.eval.judge_samples
    sec.add(
        "judge calls",
        f"{_num(calls)} (up to {_num(calls * (1 + reasks))} with {reasks} re-asks each)"
        + (f"; {samples} judge samples per task (eval.judge_samples)" if samples > 1 else ""),
    )
    sec.add("judge tokens in / out", f"{_num(j_in)} / {_num(j_out)}")
    model_id, price, src = judge_price(cfg)
    cost = (j_in * price.input_per_mtok + j_out * price.output_per_mtok) / 1e6 if price else 0.0
    sec.add(f"judge cost ({model_id})", f"${cost:,.2f} (up to ${cost * (1 + reasks):,.2f} with re-asks)")
    if price:
        p.assumptions.append(
            ("judge price", f"${price.input_per_mtok:g} in / ${price.output_per_mtok:g} out per M tokens", src)
        )
    else:
        p.assumptions.append(("judge price", "$0", src))
    for member in cfg.eval.panel:  # a judge panel: each of its judges asks every judge call again, at its price
        model_id, price, src = judge_price(cfg, member.model)
        extra = (j_in * price.input_per_mtok + j_out * price.output_per_mtok) / 1e6 if price else 0.0
        sec.add(f"panel judge {member.label} ({model_id})", f"{_num(calls)} judge calls, ${extra:,.2f}")
        if not price:
            p.assumptions.append((f"panel judge {member.label} price", "$0", src))
        cost += extra
    hours = _gpu_hours(gen_tokens, stu[0])
    _hours(sec, p, cfg, {"student": hours}, "eval")
    p.totals["judge_usd"] = cost
    return sec


def project(cfg: RootConfig, calibrate: Optional[str] = None) -> Projection:
    p = Projection()
    builders = {"synthesize": synthesis_section, "mix": mix_section, "sft": sft_section, "eval": eval_section}
    for stage in cfg.recipe.stages:
        if stage == "synthesize" and calibrate:
            p.sections.append(calibrated_section(cfg, p, Path(calibrate)))
        else:
            p.sections.append(builders[stage](cfg, p))
    gpu = sum(v for k, v in p.totals.items() if k != "judge_usd")
    hw = cfg.plan.hardware
    total = Section(f"total for recipe {cfg.recipe.name!r} ({', '.join(cfg.recipe.stages)})")
    total.add("GPU-hours", gpu)
    total.add(f"wall-clock on {hw.count}x {hw.gpu}", f"{gpu / hw.count:,.1f} h")
    total.add("judge USD", f"${p.totals.get('judge_usd', 0.0):,.2f}")
    p.sections.append(total)
    return p


def stage_wall_hours(cfg: RootConfig, stages: List[str]) -> Dict[str, float]:
    """The plan's wall-clock hours of each stage on its fleet (GPU-hours over plan.hardware.count): what
    the SLURM jobs' requeue allowances are computed from (deepwriter.cluster.time_limits)."""
    import dataclasses

    totals = project(dataclasses.replace(cfg, recipe=dataclasses.replace(cfg.recipe, stages=list(stages)))).totals
    return {s: totals.get(s, 0.0) / max(1, cfg.plan.hardware.count) for s in stages}


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts, overrides = split_options(list(sys.argv[1:] if argv is None else argv), OPTIONS)
    try:
        cfg = to_typed(compose(overrides))
        # under launcher=slurm each replica is a job of its own (serving.placement): no GPU of the stage's node
        as_jobs = serves_as_jobs(cfg, in_stage_job=False)
        # the managed servers on the plan's GPUs as it assumes them (plan.hardware.count), not this
        # machine's; hardware too small for them is refused like the run refuses it
        placed = serving_layout(cfg, list(range(cfg.plan.hardware.count)), stage_roles(cfg), as_jobs)
        layout = placed.text().splitlines()
        text = "== " + layout[0].rstrip(":") + "\n" + "\n".join(layout[1:]) + "\n"
        text += project(cfg, opts.get("calibrate")).text()
        if cfg.launcher.submits_jobs:  # the jobs `deepwriter.train ... launcher=slurm` would submit
            stages = [s for s in STAGE_ORDER if s in cfg.recipe.stages]
            text += "\n" + graph_text(job_graph(cfg, stages, stage_wall_hours(cfg, stages), stage_arrays(cfg)))
            text += server_graph_text(cfg, placed, stage_arrays(cfg)) if as_jobs else ""
    except ConfigError as exc:
        print(f"deepwriter.plan: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0
