"""The W&B dashboard of a deepwriter project: what to look at, per stage, across recipes.

    python -m deepwriter.dashboard --project P [--entity E] [--dry-run] [--out DIR] [-- HYDRA_OVERRIDES ...]

Every stage of a run logs to its own W&B run (job type = the stage name, group = the recipe; see
deepwriter/tracking/runs.py), so one workspace shows a recipe's curves next to its ablations' curves:

- sft: loss curves (train/loss, train/learning_rate, train/grad_norm) and throughput (train/tokens_per_s,
  train/mfu, memory) from the metrics callback in deepwriter/sft/trainer.py;
- synthesize: search scores per sample (synthesize/score_z0, synthesize/score_final), the score-vs-step
  plot, score histograms and the trajectory table;
- mix: counts, removed records, categories and token lengths of the SFT mix;
- eval: the headline scores (eval/LB, eval/HB-A, eval/WB-A, ... from the enabled benchmarks), item tables
  and plots.

When the `wandb-workspaces` package is importable (the dev extra installs it), the layout is saved as a
workspace of the project through the W&B API, under --entity, else logging.entity, else the logged-in
user's default entity. Otherwise — and always with `--dry-run`,
which needs no network — the layout is written as dashboard.json + dashboard.md (to --out) and
printed, for building the workspace by hand.

Runs made offline (the default without a W&B login) live in each stage folder; upload them with
`wandb sync runs/_stages/<stage>/<key>/wandb/offline-run-*` before opening the dashboard.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwriter.config.compose import compose
from deepwriter.config.eval import EvalConfig
from deepwriter.config.root import CONF_DIR, ConfigError, RootConfig, split_overrides, to_typed
from deepwriter.eval.benchmarks import module_for

RECIPES_DIR = CONF_DIR / "recipe"


@dataclass
class Panel:
    kind: str  # line (metrics over the run's steps) | bar (one value per run) | image | table | histogram | custom
    title: str
    metrics: List[str]
    x: str = "Step"


@dataclass
class Section:
    name: str
    job_type: str  # the stage whose runs log these metrics
    panels: List[Panel] = field(default_factory=list)


def eval_headline_names(eval_cfg: EvalConfig) -> List[str]:
    """The `eval/...` headline keys the eval stage logs for these benchmarks, as each benchmark names
    its columns."""

    names: List[str] = []
    for name, b in eval_cfg.benchmarks.items():
        if b.enabled:
            names += [f"eval/{k}" for k in module_for(name, b).headline_keys(name, b)]
    return names


def eval_plot_names(eval_cfg: EvalConfig) -> List[str]:
    """Image keys of the eval stage (its artifacts named plot_*; see deepwriter/eval/tables.py)."""

    out = ["eval/plot_headline", "eval/plot_radar"]
    for name, b in eval_cfg.benchmarks.items():
        if b.enabled:
            out += [f"eval/plot_{name}_{c.key}" for c in module_for(name, b).breakdowns({}) if c.plotted]
    return out


def layout(cfg: RootConfig) -> List[Section]:
    """Sections of the dashboard for a composed RootConfig (its eval benchmarks name the eval keys)."""
    sft = Section(
        "SFT: loss and throughput",
        "sft",
        [
            Panel("line", "training loss", ["train/loss"]),
            Panel("line", "learning rate", ["train/learning_rate"]),
            Panel("line", "gradient norm", ["train/grad_norm"]),
            Panel("line", "throughput (tokens/s)", ["train/tokens_per_s"]),
            Panel("line", "MFU", ["train/mfu"]),
            Panel("line", "memory (GB)", ["train/mem/gpu_max_allocated_gb", "train/mem/cpu_max_rss_gb"]),
            Panel("bar", "first / last loss", ["sft/first_loss", "sft/last_loss"]),
            Panel("image", "loss curve", ["sft/loss_curve"]),
        ],
    )
    synth = Section(
        "Synthesis: search scores",
        "synthesize",
        [
            Panel(
                "line",
                "score of z0 vs searched z (per sample; lower is better)",
                ["synthesize/score_z0", "synthesize/score_final"],
            ),
            Panel("line", "search steps and kept (per sample)", ["synthesize/steps", "synthesize/kept"]),
            Panel("image", "score vs step", ["synthesize/score_vs_step"]),
            # wandb.plot.line_series logs its data as the table `<key>_table` (the run's chart is drawn
            # from it): that table is what a panel can name
            Panel("custom", "score curves", ["synthesize/score_curves_table"]),
            Panel(
                "histogram",
                "score histograms",
                ["synthesize/hist_score_z0", "synthesize/hist_score_final", "synthesize/hist_improvement"],
            ),
            Panel(
                "bar",
                "mean scores and acceptance",
                ["synthesize/mean_score_z0", "synthesize/mean_score_final", "synthesize/acceptance_rate"],
            ),
            Panel("table", "trajectories", ["synthesize/trajectories"]),
        ],
    )
    mix = Section(
        "Mix: the SFT data",
        "mix",
        [
            Panel("bar", "samples by source", ["mix/synthetic", "mix/public", "mix/total"]),
            Panel("table", "removed by filter", ["mix/removed"]),
            Panel("table", "samples by category", ["mix/by_category"]),
            Panel("image", "token lengths", ["mix/token_lengths"]),
        ],
    )
    headline = eval_headline_names(cfg.eval)
    ev = Section(
        "Eval: benchmark scores",
        "eval",
        [
            Panel("bar", "headline scores (paper columns)", headline),
            *[
                Panel("table", f"{name}: items", [f"eval/{name}/items"])
                for name, b in cfg.eval.benchmarks.items()
                if b.enabled
            ],
            *[Panel("image", key.split("/", 1)[1], [key]) for key in eval_plot_names(cfg.eval)],
            Panel(
                "bar",
                "judge",
                ["eval/judge_calls", "eval/judge_cache_hits", "eval/judge_failed", "eval/judge_cost_usd"],
            ),
        ],
    )
    return [synth, mix, sft, ev]


def recipes() -> List[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def spec(cfg: RootConfig, project: str, entity: Optional[str]) -> Dict[str, Any]:
    return {
        "project": project,
        "entity": entity,
        "name": "deepwriter: recipes and ablations",
        # W&B group = recipe name (logging.group), job type = stage: group runs by recipe to compare
        # full against its ablations; each section's metrics are logged only by its stage's runs.
        "group_by": "group",
        "groups": recipes(),
        "sections": [asdict(s) for s in layout(cfg)],
    }


def to_markdown(s: Dict[str, Any]) -> str:
    lines = [
        f"# W&B dashboard: {s['entity'] + '/' if s['entity'] else ''}{s['project']}",
        "",
        f"Runs grouped by W&B group (= recipe: {', '.join(s['groups'])}); one job type per stage.",
        "",
    ]
    for sec in s["sections"]:
        lines += [
            f"## {sec['name']} (job type `{sec['job_type']}`)",
            "",
            "| panel | kind | metrics | x |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {p['title']} | {p['kind']} | {', '.join(f'`{m}`' for m in p['metrics'])} | {p['x']} |"
            for p in sec["panels"]
        ]
        lines.append("")
    return "\n".join(lines)


def build_workspace(s: Dict[str, Any]):
    """The layout as a wandb-workspaces Workspace (built and validated offline; nothing is sent)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def panel(p: Dict[str, Any]):
        if p["kind"] == "line":
            return wr.LinePlot(title=p["title"], x=p["x"], y=p["metrics"])
        if p["kind"] == "bar":
            return wr.BarPlot(title=p["title"], metrics=p["metrics"])
        if p["kind"] == "image":
            return wr.MediaBrowser(title=p["title"], media_keys=p["metrics"])
        return wr.WeavePanelSummaryTable(table_name=p["metrics"][0])

    return ws.Workspace(
        name=s["name"],
        entity=s["entity"],
        project=s["project"],
        sections=[
            ws.Section(
                name=sec["name"], panels=[panel(p) for p in sec["panels"] if p["kind"] != "histogram"], is_open=True
            )
            for sec in s["sections"]
        ],
        runset_settings=ws.RunsetSettings(groupby=[ws.Metric("Group")]),
    )


def save_workspace(s: Dict[str, Any]) -> str:
    """Save the layout as a W&B workspace of the project (needs a W&B login); returns its URL."""
    workspace = build_workspace(s)
    workspace.save()
    return workspace.url


def logged_in_entity() -> str:
    """The default entity of the logged-in W&B user (asks the W&B API)."""
    import wandb

    try:
        entity = wandb.Api().default_entity
    except Exception as exc:  # no login, no network: say what to do instead
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}" if str(exc) else type(exc).__name__
        raise ConfigError(
            f"--entity: not given and logging.entity is empty, and no W&B login to take it from ({reason}); "
            "run `wandb login` or pass --entity"
        ) from None
    if not entity:
        raise ConfigError("--entity: not given, and the W&B login has no default entity; pass --entity")
    return entity


def _workspaces_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("wandb_workspaces") is not None


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, overrides = split_overrides(argv)
    ap = argparse.ArgumentParser(prog="python -m deepwriter.dashboard", description=__doc__.splitlines()[0])
    ap.add_argument("--project", help="W&B project (default: logging.project of the config)")
    ap.add_argument("--entity", default=None)
    ap.add_argument("--dry-run", action="store_true", help="print the layout (JSON) and write nothing; no network")
    ap.add_argument("--out", default="runs/dashboard", help="folder for dashboard.json/.md when not saved to W&B")
    ap.add_argument("--recipe", default="full", help="recipe whose eval benchmarks name the eval panels")
    args = ap.parse_args(argv)

    cfg = to_typed(compose([f"+recipe={args.recipe}", *overrides]))
    s = spec(cfg, args.project or cfg.logging.project, args.entity or cfg.logging.entity)
    if args.dry_run:
        print(json.dumps(s, indent=2))
        return 0
    if _workspaces_available():
        try:  # a workspace belongs to an entity: the logged-in user's unless one is given
            s["entity"] = s["entity"] or logged_in_entity()
        except ConfigError as exc:
            print(f"deepwriter.dashboard: {exc}", file=sys.stderr)
            return 2
        print(f"dashboard saved: {save_workspace(s)}")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard.json").write_text(json.dumps(s, indent=2) + "\n")
    (out / "dashboard.md").write_text(to_markdown(s) + "\n")
    print(to_markdown(s))
    print(
        f"wandb-workspaces is not installed (pip install 'wandb[workspaces]' to save the workspace through the "
        f"W&B API); layout written to {out / 'dashboard.json'} and {out / 'dashboard.md'}",
        file=sys.stderr,
    )
    return 0
