"""The stage list is written once (deepwriter.core.contract.STAGE_ORDER): the recipe's check, the runner's
stage table and the launcher's per-stage jobs config are drawn from it."""

from __future__ import annotations

import dataclasses

from deepwriter.config.launcher import SlurmJobsConfig
from deepwriter.core.contract import STAGE_ORDER
from deepwriter.pipeline.runner import STAGES
from deepwriter.testing.repo import REPO


def test_the_stage_list_is_written_once_and_the_rest_drawn_from_it():
    assert [f.name for f in dataclasses.fields(SlurmJobsConfig)] == [*STAGE_ORDER, "server"]
    assert tuple(STAGES) == STAGE_ORDER
    written = [p for p in (REPO / "deepwriter").rglob("*.py") if "STAGE_ORDER = (" in p.read_text()]
    assert [p.relative_to(REPO).as_posix() for p in written] == ["deepwriter/core/contract.py"]
