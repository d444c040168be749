"""Print every prompt the models of a recipe would see for one pair, rendered as each model reads it.

    python -m deepwriter.prompts +recipe=demo pairs=FILE id=ID [z=FILE] [bench=NAME] [item=N] [overrides]

The pairs file is read with the recipe's field mapping (`data.pairs.fields`; for `demo`: id, request,
answer). Shown in order: the generator's initial prompt (z0) with its prefill, one refinement step
(of the first segment of z0: the text of `z=FILE`, else a marked placeholder, since z0 only exists
once the generator wrote it), the scorer's context with the scored part marked, and the judge's
prompts for one item of a benchmark of the recipe's eval (`bench=`, default the first enabled;
`item=`, default 0). Each is rendered with its model's chat template when the tokenizer can be
loaded (local files, the package's GGUF, the HF cache); otherwise the messages are shown as sent.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from deepwriter.config.compose import compose
from deepwriter.config.llm import ModelConfig
from deepwriter.config.root import ConfigError, expand, split_options, to_typed
from deepwriter.core.badinput import DataError
from deepwriter.core.errors import print_error, tracked_stderr
from deepwriter.eval.preview import judge_prompts as preview
from deepwriter.llm import models
from deepwriter.llm.base import Message, Sampling
from deepwriter.pairs.sources import read_ready_pairs
from deepwriter.synthesis import prompts, segments
from deepwriter.synthesis.search import TrajectoryScorer, opening

OPTIONS = ("pairs", "id", "z", "bench", "item")
SCORED = "⟦scored from here⟧"
NOT_SCORED = "⟦to here⟧"  # what follows is read with y (a token straddling y's end counts) but not scored
# Three segments standing for a z0 that only exists once the generator has written it.
PLACEHOLDER_SEGMENTS = [
    f"[z0, segment {i} of 3: a placeholder for the generator's think-aloud, which is not written yet. "
    "Pass z=FILE to see a real trajectory in its place.]"
    for i in (1, 2, 3)
]


class Renderer:
    """A model's chat template, or the plain messages when its tokenizer cannot be had offline.
    Roles served by the same model share one tokenizer load (`loaded`)."""

    def __init__(self, role: str, mcfg: ModelConfig, cache_dir: str, loaded: Optional[Dict[tuple, Tuple]] = None):
        self.role, self.name = role, mcfg.endpoint.model or mcfg.name
        loaded = {} if loaded is None else loaded
        where = (mcfg.source, mcfg.path, mcfg.gguf_file, mcfg.revision)
        if where not in loaded:
            loaded[where] = self._load(mcfg, cache_dir)
        self.tokenizer, self.why_not = loaded[where]

    @staticmethod
    def _load(mcfg: ModelConfig, cache_dir: str) -> Tuple:
        try:
            return models.load_tokenizer(mcfg, cache_dir), ""
        except Exception as exc:  # no network, no cache: the messages are still worth seeing
            return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"

    def render(self, messages: List[Message], assistant_prefix: str = "") -> str:
        if self.tokenizer is not None:
            # here, not at the top: it imports torch and transformers, which only this path needs
            from deepwriter.llm.hf import render_prompt

            return render_prompt(self.tokenizer, messages, assistant_prefix)
        shown = "".join(f"<<{m['role']}>>\n{m['content']}\n" for m in messages)
        return shown + (f"<<assistant, prefilled>>\n{assistant_prefix}" if assistant_prefix else "")

    def header(self, what: str, detail: str = "") -> str:
        how = "chat template" if self.tokenizer is not None else f"messages as sent (no chat template: {self.why_not})"
        return f"\n===== {self.role} ({self.name}): {what} =====\n[{how}{'; ' + detail if detail else ''}]\n"


def _sampling_text(s: Sampling) -> str:
    text = f"temperature {s.temperature}, top_p {s.top_p}, max_new_tokens {s.max_new_tokens}"
    return text + (f", seed {s.seed}" if s.seed is not None else "") + (f", stop {list(s.stop)}" if s.stop else "")


def find_pair(cfg, path: str, pair_id: str):
    import dataclasses

    src = dataclasses.replace(cfg.data.pairs, path=path, hub_id=None)
    pairs, _ = read_ready_pairs(src, strict=True, key="data.pairs")
    for p in pairs:
        if str(p.id) == pair_id:
            return p
    raise DataError(path, "id", f"no pair with id {pair_id!r} among {len(pairs)} pairs")


def synthesis_prompts(cfg, pair, z_text: Optional[str], gen: Renderer, sco: Renderer) -> str:
    scfg = cfg.synthesis
    seed, lang, trigger = opening(str(pair.id), pair.x, scfg)
    out = [f"pair {pair.id}: language {lang} (synthesis.language={scfg.language}), z0 opens with {trigger!r}"]
    init = Sampling(
        scfg.initial.temperature, scfg.initial.top_p, scfg.initial.max_new_tokens, seed, (prompts.THINK_CLOSE,)
    )
    out.append(gen.header("initial trajectory z0", _sampling_text(init)))
    out.append(
        gen.render(
            prompts.initial_messages(pair.x, pair.y, lang, scfg.reflection, scfg.system_prompt),
            prompts.initial_prefill(trigger),
        )
    )
    segs = segments.split(z_text, scfg.min_segment_chars) if z_text else list(PLACEHOLDER_SEGMENTS)
    z = segments.join(segs)
    prefill = prompts.refine_prefill(lang, scfg.refine_analysis)
    stop = prompts.refine_stop(scfg.refine_analysis)
    ref = Sampling(scfg.refine.temperature, scfg.refine.top_p, scfg.refine.max_new_tokens, seed + 1, stop)
    detail = f"segment 1 of {len(segs)}, {scfg.num_candidates} candidates; {_sampling_text(ref)}"
    out.append(gen.header("refinement step 1", detail))
    messages = prompts.refine_messages(
        pair.x,
        pair.y,
        "",
        segs[0],
        segments.join(segs[1:]),
        lang,
        scfg.reflection,
        scfg.refine_analysis,
        scfg.system_prompt,
    )
    out.append(gen.render(messages, prefill))
    req = TrajectoryScorer(pair.x, pair.y, scfg, lang).request(z)
    clip = f"mean NLL of the scored tokens, each log-prob clipped to [{scfg.clip_min}, {scfg.clip_max}]"
    out.append(sco.header("scorer context for z", clip))
    out.append(sco.render(req.messages, req.assistant_prefix) + SCORED + req.target + NOT_SCORED + req.suffix)
    return "\n".join(out)


def judge_prompts(cfg, bench: Optional[str], item: int, judge: Renderer) -> str:
    enabled = [name for name, b in cfg.eval.benchmarks.items() if b.enabled]
    if not enabled:
        return "\n(no benchmark enabled in this recipe's eval)"
    name = bench or enabled[0]
    if name not in cfg.eval.benchmarks:
        raise ConfigError(f"bench: unknown benchmark {name!r}; expected one of {sorted(cfg.eval.benchmarks)}")
    answer = "[the answer of the model under test]"
    out = []
    for key, messages, sampling in preview(cfg.eval, expand(cfg.paths.data_dir), name, answer, item):
        out.append(judge.header(f"benchmark {name}, item {item}, task {key}", _sampling_text(sampling)))
        out.append(judge.render(messages))
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    with tracked_stderr():  # the error line after a progress bar starts a line of its own
        return _main(list(sys.argv[1:] if argv is None else argv))


def _main(argv: List[str]) -> int:
    opts, overrides = split_options(argv, OPTIONS)
    try:
        missing = [k for k in ("pairs", "id") if not opts.get(k)]
        if missing:
            raise ConfigError(
                f"{missing[0]}: required (usage: python -m deepwriter.prompts +recipe=NAME pairs=FILE id=ID)"
            )
        if not opts.get("item", "0").isdigit():
            raise ConfigError(f"item: expected a non-negative integer, got {opts['item']!r}")
        cfg = to_typed(compose(overrides))
        pair = find_pair(cfg, opts["pairs"], opts["id"])
        z_text = Path(opts["z"]).read_text(encoding="utf-8") if opts.get("z") else None
        cache = cfg.paths.cache_dir
        loaded: Dict[tuple, Tuple] = {}
        gen = Renderer("generator", cfg.models.generator, cache, loaded)
        sco = Renderer("scorer", cfg.models.scorer, cache, loaded)
        judge = Renderer("judge", cfg.models.judge, cache, loaded)
        text = synthesis_prompts(cfg, pair, z_text, gen, sco)
        text += "\n" + judge_prompts(cfg, opts.get("bench"), int(opts.get("item", 0)), judge)
    except (ConfigError, DataError) as exc:
        print_error(f"deepwriter.prompts: {exc}")
        return 2
    print(text)
    return 0
