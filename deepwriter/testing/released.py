"""Rows in the layout of the authors' released DeepWriting-20K, for tests: verl-style columns (the request
as chat turns in `prompt`, `<think>...</think>` then the answer in `solution`, the index and category in
`extra_info`), written as a local folder laid out as the hub dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List


def verl_row(i: int, request: str, solution: str, category: str = "creative & narrative") -> Dict[str, Any]:
    """A row as the released parquet holds it (verl-style columns, as the public scripts read them)."""
    return {
        "data_source": "DeepWriting-20K",
        "prompt": [{"role": "user", "content": request}],
        "solution": solution,
        "ability": "writing",
        "reward_model": {"style": "model", "ground_truth": ""},
        "extra_info": {"index": i, "category": category},
    }


def hub_folder(tmp_path: Path, rows: List[Dict[str, Any]]) -> Path:
    """A local folder laid out as the hub dataset: data/train-00000-of-00001.parquet."""
    import datasets

    folder = tmp_path / "DeepWriting-20K"
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder
