"""Entry point: `python -m deepwriter.train +recipe=NAME [overrides...]`.

Composes the Hydra config (conf/config.yaml + recipes/NAME.yaml + overrides), converts it to the typed
dataclasses, and runs the recipe's stages. Configuration mistakes are reported as one line naming the
key before any work starts.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import hydra
from omegaconf import DictConfig

from deepwriter.config.compose import preflight, renamed_overrides
from deepwriter.config.root import CONF_DIR as ROOT_CONF_DIR
from deepwriter.config.root import ConfigError, RootConfig, expand, register_resolvers, register_schemas, to_typed
from deepwriter.core.errors import DeepwriterError, UnfinishedError, print_error, tracked_stderr
from deepwriter.pipeline.summary import print_summary
from deepwriter.tracking.runs import stage_tracker

# Exit codes: 2 = bad config or input (fix it first); 3 = items unfinished because model calls failed
# (run the same command again once the servers are back).
EXIT_UNFINISHED = 3
CONF_DIR = str(ROOT_CONF_DIR)
log = logging.getLogger("deepwriter")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base=None)
def _hydra_main(cfg: DictConfig) -> None:
    # the stages' modules (~1.5 s of imports) load only once the config is good: a bad one is refused at once
    from deepwriter.pipeline.runner import run_pipeline

    typed = None
    try:
        typed = to_typed(cfg)
        logging.getLogger("deepwriter").setLevel(typed.logging.level)
        # httpx logs every request at INFO: in a served run that drowns the progress bars. Its warnings
        # stay; hydra.verbose=true (every logger at DEBUG) keeps every request.
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            logging.getLogger("httpx").setLevel(logging.WARNING)
        if typed.launcher.submits_jobs:  # the stages as SLURM jobs; this process submits (and waits)
            sys.exit(_submit(typed))
        manifest = run_pipeline(typed, stage_tracker)
    except ConfigError as exc:  # e.g. a missing input, found before any work
        print_error(f"deepwriter: config error: {exc}")
        sys.exit(2)
    except UnfinishedError as exc:  # servers failed: finished work is kept, the same command resumes
        print_error(f"deepwriter: unfinished: {exc}")
        write_run_report(_run_dir(typed))  # what the finished stages did is worth reading meanwhile
        sys.exit(EXIT_UNFINISHED)
    except DeepwriterError as exc:  # bad input data, a plan that cannot fit, ...: finished stages are kept
        print_error(f"deepwriter: error: {exc}")
        write_run_report(_run_dir(typed))
        sys.exit(2)
    print_summary(manifest)
    write_run_report(Path(manifest["run_dir"]))


def _submit(typed: RootConfig) -> int:
    """launcher=slurm: submit the stages as jobs; with launcher.wait, follow them and end as a local run
    does: the summary, then the report's path as the last line."""
    # loaded once the config is good, as in _hydra_main (the cost model and the runner: ~2 s of imports)
    from deepwriter.commands.plan import stage_wall_hours
    from deepwriter.pipeline.runner import submit_jobs

    rc = submit_jobs(typed, sys.argv[1:], stage_wall_hours)
    run_dir = _run_dir(typed)
    manifest = run_dir / "manifest.json"
    if typed.launcher.wait and manifest.is_file():
        import json

        print_summary(json.loads(manifest.read_text()))
    if manifest.is_file():
        write_run_report(run_dir)
    elif not typed.launcher.wait:  # nothing ran yet: each job writes the report when it ends
        print(f"report (written as each job ends): {run_dir / 'report.html'}", flush=True)
    return rc


def _run_dir(typed: Optional[RootConfig]) -> Optional[Path]:
    return expand(typed.paths.runs_dir) / typed.recipe.name / typed.run_id if typed is not None else None


def write_run_report(run_dir: Optional[Path]) -> None:
    """Build the run's report.html and print its path as the last line; a report that cannot be
    built is a warning, never a failed run (the stages' outputs are what matters)."""
    if run_dir is None or not (run_dir / "manifest.json").is_file() or os.environ.get("RANK", "0") != "0":
        return  # one report per run: rank 0 of a multi-process launch writes it
    from deepwriter.viewer import build_run_report  # the report's page (~0.7 s of imports): only at the end

    try:
        page = build_run_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - any fault of the viewer must leave the run's result alone
        log.warning("run report not written: %s: %s", type(exc).__name__, exc)
        return
    print(f"report: {page}", flush=True)


def main(argv: Optional[List[str]] = None) -> None:
    argv = renamed_overrides(list(sys.argv[1:] if argv is None else argv))
    register_schemas()
    register_resolvers()
    info_only = any(a in ("--help", "-h", "--hydra-help", "--info") or a.startswith("--cfg") or a == "-c" for a in argv)
    with tracked_stderr():  # an error line after a progress bar starts a line of its own
        error = preflight(argv)
        if error:
            print_error(f"deepwriter: config error: {error}")
            sys.exit(2)
        if not info_only:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        sys.argv = [sys.argv[0]] + argv
        _hydra_main()


if __name__ == "__main__":
    main()
