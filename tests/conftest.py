"""Shared fixtures: tiny random models, a throw-away cache, composed configs, the real third-party
programs (a vLLM server, headless Chromium) and the shared data. No network, except for tests marked
`index` (they resolve against the Python package index).

No test goes green by skipping. What a test needs from outside the Python environment (NEEDS) fails
it, saying how to get it, when missing; a person who opts out on purpose sets
DEEPWRITER_ALLOW_SKIP=vllm,browser,shared (or `all`), which turns exactly those into skips; CI (the CI
variable set, as `.ci/run` sets it) refuses the switch. Any other skip fails the session
(pytest_sessionfinish below): a test's, a whole module's at collection (`allow_module_level`,
`importorskip`), and any xfail, which is a skip by another name.

The session has its own DEEPWRITER_CACHE (converted models, built tiny models, downloaded data), so
nothing a test writes lands in the user's cache; the embedded model's converted copy is seeded from
the user's cache, read-only, when it is there."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import List, NoReturn, Tuple

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

from deepwriter.testing.repo import SHARED, compose_typed  # noqa: E402


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One cache folder for the whole session, so tiny models are built once."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_model_cfg():

    return compose_typed("model@models.student=tiny-qwen3").models.student


@pytest.fixture(scope="session")
def tiny_model(tiny_model_cfg, model_cache):
    from deepwriter.llm import models

    return models.load(tiny_model_cfg, model_cache, device="cpu")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        missing("shared")
    return SHARED


# --- what the suite needs from outside the Python environment --------------------------------------

ALLOW_SKIP_ENV = "DEEPWRITER_ALLOW_SKIP"
NEEDS = {
    "vllm": "vLLM's environment (.venv-serve) is not installed: `make serve-install` creates it",
    "browser": "no headless Chromium (chromium, chromium-browser or google-chrome) on PATH: `make browser` installs it",
    "slurm": "no local SLURM cluster answers (scontrol ping, sinfo): `make slurm-local` installs and starts one",
    "shared": f"the shared data (benchmarks, seed pairs) is missing: expected at {SHARED} "
    "(beside the checkout, or where DEEPWRITER_SHARED points)",
}
SKIP_TAG = "[opted out: " + ALLOW_SKIP_ENV  # in every skip the switch allows; any other skip fails the session


def allowed_skips() -> set:
    """The needs a person opted out of, from DEEPWRITER_ALLOW_SKIP (comma-separated; `all`: every one)."""
    raw = {x.strip() for x in os.environ.get(ALLOW_SKIP_ENV, "").split(",") if x.strip()}
    if raw and os.environ.get("CI"):
        raise pytest.UsageError(
            f"{ALLOW_SKIP_ENV} is set in CI: CI runs every test (vLLM, SLURM, Chromium, shared data)"
        )
    unknown = raw - set(NEEDS) - {"all"}
    if unknown:
        raise pytest.UsageError(f"{ALLOW_SKIP_ENV}: unknown {sorted(unknown)}; expected some of {sorted(NEEDS)} or all")
    return set(NEEDS) if "all" in raw else raw


def missing(need: str) -> NoReturn:
    """A test's need is missing: it fails saying what to install, or skips when the person opted out."""
    if need in allowed_skips():
        pytest.skip(f"{SKIP_TAG}={need}] {NEEDS[need]}")
    pytest.fail(f"{NEEDS[need]} (or set {ALLOW_SKIP_ENV}={need} to skip these tests on purpose)", pytrace=False)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless Chromium binary the report's browser tests drive."""
    from deepwriter.testing.browser import find_chromium

    path = find_chromium()
    if path is None:
        missing("browser")
    return path


@pytest.fixture(scope="session")
def slurm_cluster() -> bool:
    """The one-node SLURM cluster `make slurm-local` starts (.ci/slurm-local), checked once a session."""
    from deepwriter.testing.slurm import cluster_answers

    if not cluster_answers():
        missing("slurm")
    return True


VLLM_PRESET = "smollm2-135m-vllm"


_session_vllm: List = []  # the session's one vLLM server, once a test has started it


@pytest.fixture(scope="session")
def _session_vllm_server(tmp_path_factory):
    from deepwriter.testing.vllm_server import SERVE_STAMP, VLLMServer

    if not SERVE_STAMP.exists():
        missing("vllm")
    server = VLLMServer(VLLM_PRESET, tmp_path_factory.mktemp("vllm") / "server.log").start()
    _session_vllm.append(server)
    yield server
    server.kill()


@pytest.fixture
def vllm_server(_session_vllm_server):
    """One real vLLM server (the embedded SmolLM2, started by `make serve`) for every test of the
    session that talks to a server it did not start: a start-up costs half a minute to a minute on 2
    cores. The outage test kills it and starts it again. The tests that start their own vLLM engines
    (`own_vllm_engines` below) run after every test that uses it and stop it first."""
    if _session_vllm_server.proc is None:  # stopped for a run with its own engines: only if run out of order
        _session_vllm_server.start()
    return _session_vllm_server


@pytest.fixture
def own_vllm_engines():
    """For a test whose run starts its own vLLM servers: the session's server is stopped first, so two
    vLLM engines never share the cores (on 2 cores each would starve the other). Such tests are ordered
    after every user of `vllm_server` (pytest_collection_modifyitems), so no start-up is added."""
    for server in _session_vllm:
        pgid = server.proc.pid if server.proc is not None else None
        server.kill()
        if pgid is not None:  # a killed engine may take a moment to tear down its memory
            import time

            from deepwriter.testing.repo import process_group

            deadline = time.monotonic() + 30
            while process_group(pgid) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert process_group(pgid) == [], f"the session's vLLM server (group {pgid}) still runs"


def pytest_collection_modifyitems(session, config, items):
    """Tests that start their own vLLM engines go last (stably), after every user of the session's server."""
    items.sort(key=lambda item: "own_vllm_engines" in getattr(item, "fixturenames", ()))


# --- the session's own cache, and no silent skips ----------------------------------------------------

_session_cache: List[Path] = []
_unallowed_skips: List[Tuple[str, str]] = []


def _seed_cache(user: Path, cache: Path) -> None:
    """The converted copies of GGUF models in the user's cache, linked file by file into the session
    cache (never written: the loader only reads a folder that has its config.json). Tiny models and
    anything else are built afresh."""
    for folder in sorted((user / "models").glob("*")):
        # `<gguf stem>-<16 hex digits>`; not tiny models, nor the `<name>.<random>` folders of a write
        if not re.fullmatch(r".+-[0-9a-f]{16}", folder.name) or not (folder / "config.json").is_file():
            continue
        for src in folder.rglob("*"):
            if src.is_file():
                dest = cache / "models" / folder.name / src.relative_to(folder)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(src)


@pytest.fixture
def one_torch_thread():
    """The tiny model is too small to gain from threads; on a busy machine they only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "index: resolves packages against the Python package index (PyPI, or PIP_INDEX_URL): needs it"
    )
    allowed_skips()  # a misspelt opt-out stops the session before any test
    user = Path(os.path.expanduser(os.environ.get("DEEPWRITER_CACHE", "~/.cache/deepwriter")))
    cache = Path(tempfile.mkdtemp(prefix="deepwriter-test-cache-"))
    _seed_cache(user, cache)
    os.environ["DEEPWRITER_CACHE"] = str(cache)  # for this process and every one a test starts
    _session_cache.append(cache)


def pytest_unconfigure(config):
    for cache in _session_cache:
        shutil.rmtree(cache, ignore_errors=True)


def _skip_reason(report) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


def pytest_collectreport(report):
    """A module-level skip (`pytest.skip(allow_module_level=True)`, `pytest.importorskip`) skips a
    whole file at collection, before any test's own report: it is held to the same rule."""
    if report.skipped and SKIP_TAG not in _skip_reason(report):
        _unallowed_skips.append((report.nodeid, _skip_reason(report)))


def pytest_runtest_logreport(report):
    if hasattr(report, "wasxfail"):  # an expected failure is a skip by another name: forbidden
        if report.when == "call" or report.skipped:
            _unallowed_skips.append(
                (report.nodeid, f"xfail ({report.wasxfail or 'no reason'}): xfails are not allowed")
            )
    elif report.skipped and SKIP_TAG not in _skip_reason(report):
        _unallowed_skips.append((report.nodeid, _skip_reason(report)))


def pytest_sessionfinish(session, exitstatus):
    if _unallowed_skips and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _unallowed_skips:
        terminalreporter.section("skipped without an opt-out: the run fails", sep="=", red=True, bold=True)
        for nodeid, reason in _unallowed_skips:
            terminalreporter.line(f"{nodeid}: {reason}")
        terminalreporter.line(
            f"A test never goes green by skipping: install what it needs, or set {ALLOW_SKIP_ENV} "
            f"({', '.join(sorted(NEEDS))}) to skip on purpose."
        )
