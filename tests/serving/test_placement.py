"""Placement of a run's managed servers: a pure function of the fleet and the visible GPUs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deepwriter.config.llm import ServingConfig
from deepwriter.core.errors import ConfigError
from deepwriter.serving.placement import Group, managed_groups, place
from deepwriter.testing.repo import REPO

STAGES = ["synthesize", "mix", "sft", "eval"]
GEN_32B = Group("qwen2.5-32b", ("generator",), ServingConfig(managed=True, replicas=3, tensor_parallel=2), 0, 0)


def test_eight_gpus_32b_tp2_three_replicas_and_the_scorer():
    layout = place(STAGES, [GEN_32B], {"synthesize": ["scorer"]}, list(range(8)))
    reps = layout.replicas["qwen2.5-32b"]
    assert [r.devices for r in reps] == [(1, 2), (3, 4), (5, 6)]
    assert [r.port for r in reps] == [8000, 8001, 8002]
    assert [r.cuda_visible_devices for r in reps] == ["1,2", "3,4", "5,6"]
    assert layout.inprocess == {"synthesize": {"scorer": 0}}
    used = [d for r in reps for d in r.devices]
    assert len(used) == len(set(used)) == 6 and 0 not in used  # disjoint, the scorer's GPU kept out


def test_gpus_of_a_group_that_ended_go_to_a_later_one():
    student = Group("student", ("student",), ServingConfig(managed=True, replicas=8, base_port=8100), 3, 3)
    layout = place(STAGES, [GEN_32B, student], {"synthesize": ["scorer"]}, list(range(8)))
    assert [r.devices for r in layout.replicas["student"]] == [(i,) for i in range(8)]
    assert [r.port for r in layout.replicas["student"]] == list(range(8100, 8108))


def test_too_few_gpus_is_one_line_before_any_work():
    with pytest.raises(ConfigError) as err:
        place(STAGES, [GEN_32B], {"synthesize": ["scorer"]}, [0, 1, 2, 3])
    msg = str(err.value)
    assert "\n" not in msg
    assert "needs 7 GPUs" in msg and "has 4" in msg and "serving.managed=false" in msg


def test_cpu_node_runs_tp1_replicas_on_the_cpu_and_refuses_tensor_parallel():
    small = Group("smollm2-135m", ("generator", "scorer"), ServingConfig(managed=True, base_port=8300), 0, 0)
    layout = place(STAGES, [small], {"synthesize": []}, [])
    assert [(r.port, r.devices) for r in layout.replicas["smollm2-135m"]] == [(8300, ())]
    with pytest.raises(ConfigError, match="has none"):
        place(STAGES, [GEN_32B], {}, [])


def test_overlapping_ports_are_refused_only_between_groups_up_at_once():
    other = Group("judge", ("judge",), ServingConfig(managed=True, base_port=8002), 0, 0)
    with pytest.raises(ConfigError, match="port 8002"):
        place(STAGES, [GEN_32B, other], {}, list(range(8)))
    later = Group("judge", ("judge",), ServingConfig(managed=True, base_port=8002), 3, 3)
    assert place(STAGES, [GEN_32B, later], {}, list(range(8))).replicas["judge"][0].port == 8002


def test_a_preset_goes_down_over_stages_that_do_not_call_it_and_roles_share_its_replicas():
    from deepwriter.config.llm import Backend, ModelConfig

    served = ModelConfig(name="smollm2", backend=Backend.openai, serving=ServingConfig(managed=True))
    student = ModelConfig(name="smollm2", backend=Backend.openai, serving=ServingConfig(managed=True, base_port=8101))
    models = {"generator": served, "scorer": served, "judge": served, "student": student}
    roles = {"synthesize": ["generator", "scorer"], "eval": ["student", "judge"]}
    groups = managed_groups(models, STAGES, roles, renamed={("eval", "student"): "smollm2+sft"})
    assert [(g.name, g.roles, g.first, g.last) for g in groups] == [
        ("smollm2", ("generator", "scorer"), 0, 0),  # one group for both roles; down over mix and sft
        ("smollm2+sft", ("student",), 3, 3),  # the model under test: the sft output's weights
        ("smollm2#2", ("judge",), 3, 3),
    ]
    assert managed_groups(models, STAGES, roles, run_managed=False) == []


def test_plan_prints_the_full_layout_and_the_switch_turns_it_off():
    run = lambda *o: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "deepwriter.plan", "+recipe=full", *o], cwd=REPO, capture_output=True, text=True
    )
    out = run()
    assert out.returncode == 0, out.stderr
    assert "replica 2: port 8002, CUDA_VISIBLE_DEVICES=5,6" in out.stdout
    assert "synthesize: in-process scorer on cuda:0" in out.stdout
    # eval serves the sft output on every GPU, after the generator's replicas have stopped
    assert "qwen3-8b-base+sft (student): 8 replica(s) x TP 1, up during eval" in out.stdout
    assert "replica 7: port 8107, CUDA_VISIBLE_DEVICES=7" in out.stdout
    off = run("serving.managed=false")
    assert "no managed server" in off.stdout
    few = run("plan.hardware.count=4")
    assert few.returncode == 2 and "needs 7 GPUs" in few.stderr and len(few.stderr.strip().splitlines()) == 1
