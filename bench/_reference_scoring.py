"""The authors' perplexity function and deepwriter's scorer on the same (x, y, z) triples, against the same
server: the score-agreement half of bench/vs_reference.py, and what tests/bench/test_vs_reference_agreement.py
keeps from rotting.

Their function is `PosteriorManager` of ../shared/reference/REER_DeepWriter/synthesize_deep_reasoning/
synthesize.py: `prepare` lays out `<think>\\n{z}\\n</think>\\n<answer>\\n{y_head}{y_rest}\\n</answer>` after
their chat-templated scorer instruction, `submit` sends it to the scorer server (a Ray task calling
`LM.generate_vllm_server(prompt_only=True)`: `/v1/completions` with `prompt_logprobs`), and `compute` picks
y_rest's tokens by character offsets and returns the clipped mean NLL. It is imported and called here as it
is: nothing of it is copied.

Our prompts are ours in wording (docs/FIDELITY.md): the scoring itself (layout of the scorer's turn, y's
split, the scored tokens, the clip) is compared under their instruction, passed to our scorer as messages;
the effect of our wording on the score is measured beside it (FIDELITY S62).

Run in the authors' environment (bench/_reference_env.py), this module scores a file of triples:

    .venv-reference/bin/python -m bench._reference_scoring TRIPLES.json OUT.json --tokenizer DIR --port P
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CODE = REPO.parent / "shared" / "reference" / "REER_DeepWriter" / "synthesize_deep_reasoning"
REFERENCE_MODULES = ("synthesize", "helper", "model_utils")


@contextlib.contextmanager
def _no_side_effects() -> Iterator[None]:
    """Their model_utils.py seeds every global RNG and sets HUGGINGFACE_HUB_TOKEN when it is imported:
    both are put back, so importing their code changes nothing else in the process."""
    import numpy as np

    state = (random.getstate(), np.random.get_state(), dict(os.environ))
    try:
        import torch

        torch_state = torch.random.get_rng_state()
    except ImportError:  # pragma: no cover - torch is in both environments
        torch, torch_state = None, None
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        os.environ.clear()
        os.environ.update(state[2])
        if torch is not None:
            torch.random.set_rng_state(torch_state)


def import_reference(code_dir: Path = REFERENCE_CODE):
    """Their synthesize.py as a module (`ray` must be importable: the real one, or a stand-in a test
    provides). Their files import each other by bare names (`from helper import *`), so their folder
    is on sys.path only while they load."""
    if not (code_dir / "synthesize.py").is_file():
        raise FileNotFoundError(f"{code_dir}/synthesize.py: the authors' code is missing (../shared/reference)")
    for name in REFERENCE_MODULES:
        sys.modules.pop(name, None)
    sys.path.insert(0, str(code_dir))
    try:
        with _no_side_effects():
            return importlib.import_module("synthesize")
    finally:
        sys.path.remove(str(code_dir))


class ReferenceScorer:
    """Their scorer as their main() builds it: an `LM` of model_type vllm_server on `port` (their
    judge_model settings: temperature 1.0, top_p 1, `max_tokens` generated tokens never read) and the
    scorer model's tokenizer for the chat template and the character offsets."""

    def __init__(self, synthesize, tokenizer, model_name: str, port: int, max_tokens: int = 100):
        self.mod = synthesize
        self.tokenizer = tokenizer
        with _no_side_effects(), contextlib.redirect_stdout(sys.stderr):  # their LM prints its settings
            self.lm = synthesize.LM(
                model_type="vllm_server",
                model_name=model_name,
                model_url=None,
                num_rollouts=1,
                tokenizer=tokenizer,
                beamsearch=0,
                port=str(port),
                max_tokens=max_tokens,
                top_k=-1,
                top_p=1,
                temperature_range=[1.0, 1.0],
            )

    def _role(self, x: str) -> str:
        return "standard_inference_" + ("cn" if self.mod.contains_chinese(x) else "en")

    def _manager(self, x: str, y: str):
        m = self.mod
        return m.PosteriorManager(self._role(x), m.default_sys, [[x]], self.tokenizer, self.lm, y)

    def messages(self, x: str) -> List[Dict[str, str]]:
        """Their scorer's instruction for x, as chat messages (their words, read from their module)."""
        m = self.mod
        return [
            {"role": "system", "content": m.default_sys},
            {"role": "user", "content": m.templates[self._role(x)].format(x)},
        ]

    def scored_answer(self, y: str) -> str:
        """The part of y whose tokens they score (y after its first segment; empty for a y of one segment)."""
        return self._manager("", y).pred_answer

    def score(self, x: str, y: str, z: str) -> float:
        """Their log perplexity of y given (x, z): what `process_item` records as `initial_ppl[0]` for a
        z0 and as `avg_token_logp` for a rewrite (1000.0 when the server gave no log-probs)."""
        manager = self._manager(x, y)
        _, posterior = manager.prepare(self.mod.think_prefix, z)
        with contextlib.redirect_stdout(sys.stderr):
            handle, _ = manager.submit(posterior)
            return float(manager.compute(handle)[0])


def deepwriter_scores(triples: Sequence[Dict[str, Any]], scorer: Any, cfg: Any) -> List[float]:
    """deepwriter's score of each triple, as the search computes it (TrajectoryScorer over `scorer`: our
    assistant-turn layout, y's split, scored-token rule and clipping). A triple with `messages` is scored
    under that instruction instead of ours: our prompts are ours in wording (docs/FIDELITY.md), so the
    scoring itself is compared under their words, and the wording's effect is measured apart."""
    from deepwriter.synthesis.search import TrajectoryScorer

    out = []
    for t in triples:
        judge = TrajectoryScorer(t["x"], t["y"], cfg)
        if t.get("messages"):
            judge.messages = t["messages"]
        value = judge.scores(scorer.score([judge.request(t["z"])]))[0]
        # a request refused as over-long is a verdict of ours, not a score: it agrees with nothing
        out.append(float(value) if isinstance(value, (int, float)) else float("nan"))
    return out


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description="the authors' scores of (x, y, z) triples (run in .venv-reference)")
    ap.add_argument("triples", type=Path, help="JSON list of {x, y, z}")
    ap.add_argument("out", type=Path, help="JSON list of {score, messages, scored_answer}, in the same order")
    ap.add_argument("--tokenizer", required=True, help="the scorer model's folder (their model name)")
    ap.add_argument("--port", type=int, required=True, help="the scorer server's port")
    ap.add_argument("--max-tokens", type=int, default=100, help="their judge_model max_tokens")
    args = ap.parse_args(argv)
    import ray
    import transformers

    # Ray's workers unpickle their LM and tasks by module name: their folder must be on the workers' path
    # too, not only on this process's while it imports their code
    path = os.pathsep.join(p for p in (str(REFERENCE_CODE), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        mod = import_reference()
        tok = transformers.AutoTokenizer.from_pretrained(
            args.tokenizer, use_fast=True, padding_side="right", truncation_side="right"
        )
        scorer = ReferenceScorer(mod, tok, args.tokenizer, args.port, args.max_tokens)
        triples = json.loads(args.triples.read_text())
        rows = [
            {
                "score": scorer.score(t["x"], t["y"], t["z"]),
                "messages": scorer.messages(t["x"]),
                "scored_answer": scorer.scored_answer(t["y"]),
            }
            for t in triples
        ]
        args.out.write_text(json.dumps(rows, ensure_ascii=False))
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
