"""python -m deepwriter.plan: worst-case counts checked by hand, calibration on a synthetic run,
bad input, and that the plan config is in no stage key."""

from __future__ import annotations

import json
import math
import re

import pytest

from deepwriter.commands import plan as P
from deepwriter.config.compose import compose, renamed_overrides
from deepwriter.config.eval import JudgePrice
from deepwriter.config.root import CONF_DIR, to_typed
from deepwriter.core.schema import key_slice
from deepwriter.pipeline.runner import STAGES
from deepwriter.pipeline.runner import plan as plan_stages

SMALL = [
    "+recipe=demo",
    "run_id=t",
    "synthesis.limit=4",
    "synthesis.max_steps=2",
    "synthesis.num_candidates=3",
    "synthesis.initial.max_new_tokens=100",
    "synthesis.refine.max_new_tokens=50",
    "plan.workload.request_tokens.value=10",
    "plan.workload.answer_tokens.value=20",
]


def cfg_of(*extra):
    return to_typed(compose(SMALL + list(extra)))


def test_worst_case_synthesis_counts_by_hand():
    cfg = cfg_of()
    tpl = P.template_tokens(cfg, 4.0)
    assert all(v > 0 for v in tpl.values())
    ti, tr, ts = tpl["initial"], tpl["refine"], tpl["scorer"]
    per = P.synthesis_bounds(cfg, tpl, 10, 20)
    # z0: 1 call, 1 sample; 2 steps x 3 candidates; z grows by <= 50 tokens per accepted rewrite
    assert per["generate_calls"] == 3 and per["samples"] == 7
    assert per["score_calls"] == 3 and per["score_requests"] == 7
    assert per["completion_tokens"] == 100 + 2 * 3 * 50
    assert per["prompt_tokens"] == (ti + 30) + 3 * (tr + 30 + 100) + 3 * (tr + 30 + 150)
    assert per["scored_tokens"] == (ts + 130) + 3 * (ts + 180) + 3 * (ts + 230)
    assert per["target_tokens"] == 7 * 20
    p = P.project(cfg)
    syn = dict(p.sections[0].rows)
    assert syn["generate calls"] == "12" and syn["score calls"] == "12"  # 4 pairs (synthesis.limit)
    assert syn["completion tokens"] == f"{4 * 400:,}"
    assert syn["pairs"].startswith("4 ")


def test_prompts_are_capped_by_the_context():
    cfg = cfg_of("models.generator.max_context=200", "models.scorer.max_context=150")
    per = P.synthesis_bounds(cfg, P.template_tokens(cfg, 4.0), 10, 20)
    assert per["prompt_tokens"] <= (200 - 100) + 6 * (200 - 50)
    assert per["scored_tokens"] <= 7 * 150


def test_no_search_is_one_generation_and_one_score():
    cfg = cfg_of("synthesis.search=false")
    per = P.synthesis_bounds(cfg, P.template_tokens(cfg, 4.0), 10, 20)
    assert (per["generate_calls"], per["score_calls"], per["completion_tokens"]) == (1, 1, 100)


def test_full_projection_prints_every_assumption_with_its_source(capsys):
    assert P.main(["+recipe=full", "run_id=t"]) == 0
    out = capsys.readouterr().out
    for title in ("== synthesize", "== mix", "== sft", "== eval", "== total", "== assumptions"):
        assert title in out
    assert "NVIDIA H100 SXM datasheet: 989 TFLOP/s dense bf16" in out
    assert "hardware.sft_mfu = 0.35: assumption:" in out
    assert "SFT memory plan: 8.19B params" in out  # the memory planner's output
    assert "220,000" in out  # 20,000 pairs x (1 + 10 steps) generate calls
    assert "1,818,624,000 = 37,000 samples x 3 epochs x 16,384 tokens" in out
    assert "6,962 (up to 20,886 with 2 re-asks each)" in out  # 120 + 647 + 1,239 x 5 judge calls
    # the judge is priced by the id it is called with
    assert "judge price = $2.5 in / $10 out per M tokens: eval.judge.prices['gpt-4o-2024-08-06']" in out
    assumptions = out.split("== assumptions")[1].strip().splitlines()[1:]
    assert assumptions and all(": " in line.split(" = ", 1)[1] for line in assumptions)


def test_sft_hours_follow_flops_and_mfu():
    cfg = to_typed(compose(["+recipe=full", "run_id=t", "plan.hardware.sft_mfu.value=0.5"]))
    p = P.project(cfg)
    from deepwriter.sft.memory import QWEN3_8B

    tokens = 37000 * 3 * 16384
    assert p.totals["sft"] == pytest.approx(6 * QWEN3_8B.params() * tokens / (989e12 * 0.5) / 3600)


def test_judge_cost_from_prices():
    cfg = to_typed(
        compose(
            [
                "+recipe=full",
                "run_id=t",
                "eval.judge.max_reasks=0",
                "eval.benchmarks.hellobench.enabled=false",
                "eval.benchmarks.writingbench.enabled=false",
                "plan.workload.judge_prompt_tokens.value=1000",
            ]
        )
    )
    cfg.eval.judge.prices["gpt-4o-2024-08-06"] = JudgePrice(input_per_mtok=1.0, output_per_mtok=2.0)
    p = P.project(cfg)
    # LongBench-Write: 120 items, 1 judge call each, answer <= 32768 tokens + 1000 prompt in, 1024 out
    expected = (120 * (1000 + 32768) * 1.0 + 120 * 1024 * 2.0) / 1e6
    assert p.totals["judge_usd"] == pytest.approx(expected)
    assert any(a[0] == "judge price" and "exactly" not in a[2] for a in p.assumptions)


def _record(i, prompt, completion, gen_s, score_s):
    return {
        "id": f"p{i}",
        "tokens": {"prompt": prompt, "completion": completion, "target": 10},
        "timings": {"generate_s": gen_s, "score_s": score_s, "total_s": gen_s + score_s},
        "steps": [{}, {}],
    }


def test_calibration_extrapolates_with_a_range(tmp_path):
    shards = tmp_path / "run" / "synthesize" / "shards"
    shards.mkdir(parents=True)
    rows = [_record(i, 1000 * (i + 1), 100 * (i + 1), 1.0 * (i + 1), 1.0) for i in range(5)]  # 1000..5000
    (shards / "shard-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = P.read_synthesis_records(tmp_path / "run")
    cal = P.calibration(records, 100)
    prompt = cal["prompt_tokens"]
    assert (prompt["mean"], prompt["min"], prompt["max"]) == (3000, 1000, 5000)
    assert prompt["p10"] == pytest.approx(1400) and prompt["p90"] == pytest.approx(4600)
    assert (prompt["total_low"], prompt["total"], prompt["total_high"]) == pytest.approx((140000, 300000, 460000))
    assert cal["model_seconds"]["total"] == pytest.approx(100 * 4.0)  # mean of (i+1) + 1 over i = 0..4
    cfg = cfg_of("plan.workload.pairs=100")
    text = P.project(cfg, str(tmp_path / "run")).text()
    assert "calibrated from 5 records" in text and "total 300,000 [140,000 .. 460,000]" in text


def test_calibration_counts_the_scorers_tokens_and_shows_the_measured_throughput(tmp_path):
    """Scorer GPU-hours come from the tokens the scorer read (context + target per scored trajectory),
    at the hardware's prefill throughput; the stage's measured throughput and busy shares are shown."""
    run = tmp_path / "run"
    shards = run / "synthesize" / "shards"
    shards.mkdir(parents=True)
    rows = []
    for i in range(4):
        r = _record(i, 1000, 100, 1.0, 1.0)
        r["tokens"].update(scorer_requests=5, scorer=90_000 * (i + 1))  # 90K..360K, mean 225K
        rows.append(r)
    (shards / "shard-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fleet = {"pairs_per_min": 12.5, "wall_s": 19.2, "generator_busy_share": 0.93, "scorer_busy_share": 0.91}
    (run / "synthesize" / "manifest.json").write_text(json.dumps({"metrics": {"fleet": fleet}}))
    cfg = cfg_of("plan.workload.pairs=1000")
    p = P.project(cfg, str(run))
    prefill = cfg.plan.hardware.throughput["scorer"].prefill_tokens_per_s.value
    scorer_h = 1000 * 225_000 / prefill / 3600
    gen = cfg.plan.hardware.throughput["generator"]
    gen_h = 1000 * 100 / gen.decode_tokens_per_s.value / 3600 + 1000 * 1000 / gen.prefill_tokens_per_s.value / 3600
    assert p.totals["synthesize"] == pytest.approx(scorer_h + gen_h)
    text = p.text()
    assert re.search(rf"GPU-hours, scorer +{re.escape(P._num(scorer_h))} \[", text)
    assert re.search(r"measured throughput +12.50 pairs/min over 19.20 s; generator busy 93%, scorer busy 91%", text)
    assert "do not count the scorer's tokens" not in text


def test_percentile_single_value():
    assert P.percentile([7.0], 0.1) == 7.0 and math.isclose(P.percentile([0, 10], 0.9), 9.0)


def test_bad_calibration_input_is_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert P.main(SMALL + [f"calibrate={missing}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"deepwriter.plan: calibrate: no run folder at {missing}"
    (tmp_path / "empty" / "synthesize" / "shards").mkdir(parents=True)
    assert P.main(SMALL + [f"calibrate={tmp_path / 'empty'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"no synthesis records under {tmp_path / 'empty' / 'synthesize' / 'shards'}")
    assert len(err.splitlines()) == 1


def test_plan_config_is_in_no_stage_key():
    base = to_typed(compose(["+recipe=demo", "run_id=t"]))
    other = to_typed(
        compose(
            [
                "+recipe=demo",
                "run_id=t",
                "plan.hardware.count=64",
                "plan.hardware.sft_mfu.value=0.9",
                "plan.workload.pairs=5",
            ]
        )
    )
    assert "plan" not in key_slice(base)
    assert not any(p == "plan" or p.startswith("plan.") for s in STAGES.values() for p in s.config_paths)
    assert {k: v.key for k, v in plan_stages(base).items()} == {k: v.key for k, v in plan_stages(other).items()}


def test_every_hardware_figure_has_a_value_and_a_source():
    """Each option of conf/hardware/ composes to hardware whose every figure names its source (the
    dataclass holds the default figures with theirs; the YAML only what the option changes)."""
    import dataclasses

    from deepwriter.config.cost import Figure, HardwareConfig, Throughput

    for f in sorted((CONF_DIR / "hardware").glob("*.yaml")):
        hw = to_typed(compose([f"hardware@plan.hardware={f.stem}"])).plan.hardware
        figures = [getattr(hw, x.name) for x in dataclasses.fields(HardwareConfig)]
        figures = [g for g in figures if isinstance(g, Figure)]
        assert len(figures) >= 3, f
        for role in ("generator", "scorer", "student"):
            tp = hw.throughput[role]
            figures += [getattr(tp, x.name) for x in dataclasses.fields(Throughput)]
        assert all(isinstance(g.value, (int, float)) and g.source for g in figures), f


def test_judge_samples_multiply_judge_calls_and_cost(capsys):
    """eval.judge_samples=3: every judge task asked three times, so three times the calls and the USD."""
    base = ["+recipe=full", "run_id=t"]
    one = P.project(to_typed(compose(base)))
    three = P.project(to_typed(compose(base + ["eval.judge_samples=3"])))
    assert three.totals["judge_usd"] == pytest.approx(3 * one.totals["judge_usd"]) and one.totals["judge_usd"] > 0
    assert P.main(base + ["eval.judge_samples=3"]) == 0
    out = capsys.readouterr().out
    # (120 + 647 + 1,239 x 5) x 3 judge calls
    assert "20,886 (up to 62,658 with 2 re-asks each); 3 judge samples per task (eval.judge_samples)" in out


def test_a_judge_panel_adds_its_judges_calls_and_cost():
    """eval.panel: each panel judge asks every judge call again; models.judge re-asked at another seed costs
    what models.judge costs."""
    base = ["+recipe=full", "run_id=t"]
    one = P.project(to_typed(compose(base)))
    panel = base + ["eval.panel=[{label: reseeded, seed_offset: 1}]"]
    two = P.project(to_typed(compose(panel)))
    assert two.totals["judge_usd"] == pytest.approx(2 * one.totals["judge_usd"]) and one.totals["judge_usd"] > 0
    rows = dict(next(s for s in two.sections if s.title.startswith("eval")).rows)
    assert rows["panel judge reseeded (gpt-4o-2024-08-06)"] == f"6,962 judge calls, ${one.totals['judge_usd']:,.2f}"


def test_the_plans_hardware_under_its_old_name_still_works_with_one_line(capsys):
    """`fleet@plan.fleet=...` and `plan.fleet.*` (the cost plan's hardware before it was renamed) compose
    as the new names for one release, each with one line saying what to write instead."""
    old = to_typed(compose(["fleet@plan.fleet=8xh100", "plan.fleet.count=16", "plan.fleet.gpu=B200"]))
    new = to_typed(compose(["hardware@plan.hardware=8xh100", "plan.hardware.count=16", "plan.hardware.gpu=B200"]))
    assert old.plan == new.plan and (new.plan.hardware.count, new.plan.hardware.gpu) == (16, "B200")
    lines = [x for x in capsys.readouterr().err.splitlines() if "deprecated" in x]
    assert len(lines) == 3 and "write 'plan.hardware.count=16'" in lines[1]
    # a sign stays, and a name that only starts like an old one is left alone
    assert renamed_overrides(["~plan.fleet.sft_mfu", "plan.fleetish=1", "+x=plan.fleet"]) == [
        "~plan.hardware.sft_mfu",
        "plan.fleetish=1",
        "+x=plan.fleet",
    ]
