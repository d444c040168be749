"""The mix's trajectory sources are one registry (deepwriter.mix.trajectories.SOURCES): every kind the
config accepts has exactly one source there, and the mix stage asks it instead of switching on the kind."""

from __future__ import annotations

import dataclasses
import re

from deepwriter.config.data import TrajectoriesConfig
from deepwriter.mix.trajectories import SOURCES
from deepwriter.testing.repo import REPO


def test_every_kind_the_config_accepts_has_one_registered_source():
    (kind,) = [f for f in dataclasses.fields(TrajectoriesConfig) if f.name == "kind"]
    assert sorted(SOURCES) == sorted(kind.metadata["choices"])
    assert all(s.kind == k for k, s in SOURCES.items())
    # only the search's own output is read from a stage; imported thinking is what the mix filters
    assert {k: (s.needs, s.imported) for k, s in SOURCES.items()} == {
        "synthesize": ("synthesize", False),
        "reference_output": (None, True),
        "released": (None, True),
    }


def test_the_mix_stage_never_switches_on_the_trajectory_kind():
    text = (REPO / "deepwriter" / "mix" / "stage.py").read_text()
    assert not re.search(r"\.kind\s*(==|!=|in\b|not in\b)", text)
