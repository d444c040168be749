"""Each default is written once, in its dataclass: a group's YAML (conf/<group>/*.yaml) holds only what a
scale, a preset or a recipe changes. A YAML value equal to the dataclass default is a second copy that
drifts the day one of them changes."""

from __future__ import annotations

from typing import Any, List

import pytest
import yaml
from omegaconf import OmegaConf

from deepwriter.config.cost import HardwareConfig
from deepwriter.config.eval import BenchmarkConfig
from deepwriter.config.llm import ModelConfig
from deepwriter.config.root import CONF_DIR, RootConfig

# The values a benchmark entry keeps although they equal BenchmarkConfig's: its judge block and its
# sampling are the benchmark's reference settings, stated where the benchmark is configured.
REFERENCE_KEYS = ("judge", "temperature", "top_p", "max_new_tokens")


def _defaults(schema: Any) -> Any:
    return OmegaConf.to_container(OmegaConf.structured(schema), resolve=False, enum_to_str=True)


def repeated_defaults(values: Any, defaults: Any, path: List[str]) -> List[str]:
    """Dotted keys of `values` whose value equals the default at the same place."""
    if path and path[-1:] == ["benchmarks"] and isinstance(values, dict):
        bench = _defaults(BenchmarkConfig)
        return [
            f"{'.'.join(path)}.{name}.{k}"
            for name, entry in values.items()
            for k, v in (entry or {}).items()
            if k not in REFERENCE_KEYS and k in bench and v == bench[k]
        ]
    if path and values == defaults:
        return [".".join(path)]
    if isinstance(values, dict) and isinstance(defaults, dict):
        return [
            key
            for k, v in values.items()
            if k in defaults
            for key in repeated_defaults(v, defaults[k], path + [str(k)])
        ]
    return []


def group_files():
    root = _defaults(RootConfig)
    groups = {"synthesis": root["synthesis"], "data": root["data"], "sft": root["sft"], "eval": root["eval"]}
    groups |= {"logging": root["logging"], "paths": root["paths"], "deepspeed": root["sft"]["deepspeed"]}
    groups |= {"launcher": root["launcher"]}
    groups |= {"model": _defaults(ModelConfig), "hardware": _defaults(HardwareConfig)}
    for group, defaults in groups.items():
        for f in sorted((CONF_DIR / group).glob("*.yaml")):
            yield pytest.param(f, defaults, id=f"{group}/{f.name}")


@pytest.mark.parametrize("path,defaults", list(group_files()))
def test_no_yaml_repeats_a_dataclass_default(path, defaults):
    values = yaml.safe_load(path.read_text()) or {}
    assert repeated_defaults(values, defaults, []) == []


def test_the_check_finds_a_repeated_default():
    defaults = _defaults(RootConfig)["synthesis"]
    assert repeated_defaults({"stop_threshold": 0.25, "max_steps": 3}, defaults, []) == ["stop_threshold"]
    assert repeated_defaults({"filters": {"min_think_tokens": 100}}, defaults, []) == ["filters.min_think_tokens"]
    evald = _defaults(RootConfig)["eval"]
    entry = {"benchmarks": {"x": {"limit": None, "temperature": 0.8, "path": "f.jsonl"}}}
    assert repeated_defaults(entry, evald, []) == ["benchmarks.x.limit"]
