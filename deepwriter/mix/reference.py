"""The authors' synthesis output as the mix's synthetic part: a user who ran their code trains with
deepwriter without running the search again.

Their code writes one file per request, `<prefix>_<uid>_rk<rank>_meta.jsonl`, holding one indented
JSON object (the whole file is one document, not JSON Lines). Only requests it kept get a file: it
drops a trajectory of under 100 generated tokens or of a single segment before writing anything. The
fields read here, and what they become:

    q                         -> x, the request
    ref                       -> y, the answer the thinking is searched for
    uid                       -> id (the input's `index`, or `extra_info.index` of a Parquet input)
    category                  -> category, when the input had one (input fields are copied through)
    alist[k].initial_response -> z0: the text before its first `</think>` (the initial thinking)
    alist[k].corrected_thinking (list of segments, present when the search ran)
                              -> z_final: the segments rejoined with blank lines; z0 when absent
    alist[k].initial_ppl[0]   -> score_z0 (their "log perplexity": the clipped mean NLL of y)
    alist[k].finalized_avg_token_logp -> score_final (same measure after the search; score_z0 when absent)

With several entries in `alist` (their `num_rollouts` > 1) the one with the lowest final score is
taken, as the search itself prefers lower scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from deepwriter.core import think
from deepwriter.mix.build import SYNTHETIC, BadRecord, gather
from deepwriter.pairs.read import DataError, Skipped

PATTERN = "*_meta.jsonl"


def reference_files(folder: Path) -> List[Path]:
    """The output files under `folder` (their ranks may write into subfolders), in a stable order."""
    return sorted(p for p in folder.rglob(PATTERN) if p.is_file())


def _text(obj: Dict[str, Any], name: str, where_in: str = "") -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        what = "missing" if value is None else ("empty" if isinstance(value, str) else f"a {type(value).__name__}")
        raise BadRecord(where_in + name, f"{what}; expected a non-empty string")
    return value


def _score(value: Any, name: str) -> Optional[float]:
    """Their scores: a number, or for initial_ppl a [value, debug info] pair."""
    if value is None:
        return None
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRecord(name, f"expected a number (or [number, ...]), got {type(value).__name__}")
    return float(value)


def _entry(item: Any, k: int, trajectory_field: str) -> Dict[str, Any]:
    """The thinking and scores of one `alist` entry."""
    at = f"alist[{k}]."
    if not isinstance(item, dict):
        raise BadRecord(f"alist[{k}]", f"expected an object, got {type(item).__name__}")
    response = _text(item, "initial_response", at)
    # Their reading: the thinking is what precedes the first </think>. The prompt opened the block and
    # `initial_response` starts at the opening phrase, so a <think> in it is the model's own and stays,
    # as in the thinking their search scored and split (S7).
    z0 = response.split(think.CLOSE, 1)[0].strip()
    if not z0:
        raise BadRecord(at + "initial_response", f"no thinking before {think.CLOSE}")
    z_final = z0
    corrected = item.get("corrected_thinking")
    if corrected is not None:
        if not isinstance(corrected, list) or not all(isinstance(s, str) for s in corrected):
            raise BadRecord(at + "corrected_thinking", "expected a list of strings")
        # Their segments stripped and rejoined with blank lines, as their search joins them for a
        # candidate and ours does (an empty rewrite that won leaves its blank lines).
        z_final = "\n\n".join(s.strip() for s in corrected)
        if not z_final.strip():
            raise BadRecord(at + "corrected_thinking", "every segment is empty")
    score_z0 = _score(item.get("initial_ppl"), at + "initial_ppl")
    score_final = _score(item.get("finalized_avg_token_logp"), at + "finalized_avg_token_logp")
    return {
        "think": z_final if trajectory_field == "z_final" else z0,
        "score_z0": score_z0,
        "score_final": score_final if score_final is not None else score_z0,
        "refined": corrected is not None,
    }


def reference_record(text: str, trajectory_field: str) -> Dict[str, Any]:
    """A mix record from the text of one output file; raises BadRecord naming the bad field."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        cut = exc.pos >= len(text.rstrip())  # the parser ran out of text: a file cut short
        hint = "; the file ends early (cut short?)" if cut else ""
        raise BadRecord("<file>", f"malformed JSON ({exc.msg}: line {exc.lineno} column {exc.colno}){hint}") from None
    if not isinstance(obj, dict):
        raise BadRecord("<file>", f"expected one JSON object, got {type(obj).__name__}")
    uid = obj.get("uid")
    if isinstance(uid, bool) or not isinstance(uid, (str, int)) or not str(uid).strip():
        raise BadRecord("uid", "missing or not a string/integer")
    x, y = _text(obj, "q"), _text(obj, "ref")
    alist = obj.get("alist")
    if not isinstance(alist, list) or not alist:
        # their own resume check treats a file without alist as unfinished
        raise BadRecord("alist", "missing or empty: the item was not finished")
    entries = [_entry(item, k, trajectory_field) for k, item in enumerate(alist)]
    best = min(entries, key=lambda e: e["score_final"] if e["score_final"] is not None else float("inf"))
    cat = obj.get("category")
    rid = str(uid)
    return {
        "id": rid,
        "x": x,
        "y": y,
        "think": best["think"],
        "category": cat if isinstance(cat, str) and cat else "uncategorised",
        "answer_id": rid,
        "source": SYNTHETIC,
        "score_z0": best["score_z0"],
        "score_final": best["score_final"],
        "refined": best["refined"],
    }


def load_reference_outputs(
    folder: Path, trajectory_field: str, strict: bool
) -> Tuple[List[Dict[str, Any]], List[Skipped], int]:
    """Mix records of every output file under `folder`, through the same bookkeeping as our shards
    (bad files raise or are counted; repeated ids are bad records). The count of records not kept is
    always 0: their code writes no file for a request it drops."""
    if not folder.is_dir():
        raise DataError(str(folder), "data.mix.trajectories_from.path", "no such folder")
    files = reference_files(folder)
    if not files:
        raise DataError(str(folder), "data.mix.trajectories_from.path", f"no {PATTERN} files in the folder")

    def items() -> Iterator[Tuple[str, Any]]:
        for path in files:
            try:
                text = path.read_bytes().decode("utf-8")
                yield str(path), reference_record(text, trajectory_field)
            except UnicodeDecodeError:
                yield str(path), BadRecord("<file>", "not valid UTF-8")
            except BadRecord as r:
                yield str(path), r

    return gather(items(), strict)
