"""The suite's own rules (tests/conftest.py), run on a small suite of their own in a fresh pytest: a
missing need (Chromium, vLLM, ../shared) fails its tests saying what to install; DEEPWRITER_ALLOW_SKIP
turns exactly those into skips; any other skip fails the run; the session's cache is its own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from deepwriter.testing.repo import REPO

SUITE = """
import os
from pathlib import Path

import pytest


def test_a_plain_skip():
    pytest.skip("no reason anyone agreed to")


def test_needs_chromium(chromium):
    pass


def test_needs_shared(shared_dir):
    pass


def test_the_session_cache_is_its_own():
    cache = Path(os.environ["DEEPWRITER_CACHE"])
    assert cache.name.startswith("deepwriter-test-cache-") and cache != Path(os.environ["USER_CACHE"])
    seeded = cache / "models" / "SmolLM2-135M-Instruct.Q4_1-0123456789abcdef" / "config.json"
    assert seeded.is_symlink() and seeded.resolve() == Path(os.environ["USER_CACHE"]) / seeded.relative_to(cache)
    assert not (cache / "models" / "tiny-0123456789ab").exists()  # tiny models are built afresh
    Path(os.environ["SEEN"]).write_text(str(cache))
"""


def _pytest(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args, str(root / "tests")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_needs_fail_opt_outs_skip_and_any_other_skip_fails_the_run(tmp_path):
    root = tmp_path / "checkout"  # DEEPWRITER_SHARED below points nowhere; the PATH has no Chromium
    (root / "tests").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", root / "tests" / "conftest.py")
    (root / "tests" / "test_rules.py").write_text(SUITE)
    user = tmp_path / "user-cache"
    for name in ("SmolLM2-135M-Instruct.Q4_1-0123456789abcdef", "tiny-0123456789ab"):
        (user / "models" / name).mkdir(parents=True)
        (user / "models" / name / "config.json").write_text("{}")
    (tmp_path / "bin").mkdir()
    env = {
        **os.environ,
        "PATH": str(tmp_path / "bin"),
        "PYTHONPATH": str(REPO),
        "DEEPWRITER_SHARED": str(tmp_path / "shared"),
        "DEEPWRITER_CACHE": str(user),
        "USER_CACHE": str(user),
        "SEEN": str(tmp_path / "seen"),
    }
    env.pop("DEEPWRITER_ALLOW_SKIP", None)
    env.pop("CI", None)  # the opt-outs below are a person's, not CI's (CI refuses them)

    strict = _pytest(root, env)
    out = strict.stdout
    assert strict.returncode == 1, out[-3000:]
    assert re.search(r"1 passed, 1 skipped, 2 errors", out), out[-3000:]  # the needs fail at setup
    assert "`make browser` installs it (or set DEEPWRITER_ALLOW_SKIP=browser" in out
    assert f"expected at {tmp_path / 'shared'} (beside the checkout, or where DEEPWRITER_SHARED points)" in out
    assert "(or set DEEPWRITER_ALLOW_SKIP=shared to skip these tests on purpose)" in out
    assert "skipped without an opt-out: the run fails" in out
    assert "test_rules.py::test_a_plain_skip: Skipped: no reason anyone agreed to" in out
    # the session's cache was its own, and is gone afterwards; nothing was written into the user's
    cache = Path((tmp_path / "seen").read_text())
    assert not cache.exists()
    assert sorted(p.name for p in (user / "models").iterdir()) == [
        "SmolLM2-135M-Instruct.Q4_1-0123456789abcdef",
        "tiny-0123456789ab",
    ]

    # opted out on purpose: exactly those tests skip, and the run passes
    opted = _pytest(root, {**env, "DEEPWRITER_ALLOW_SKIP": "browser,shared"}, "-k", "not plain_skip")
    assert opted.returncode == 0, opted.stdout[-3000:]
    assert re.search(r"1 passed, 2 skipped, 1 deselected", opted.stdout), opted.stdout[-3000:]
    assert "[opted out: DEEPWRITER_ALLOW_SKIP=browser]" in opted.stdout
    # an opt-out is no licence for other skips, and a misspelt one stops the run before any test
    assert _pytest(root, {**env, "DEEPWRITER_ALLOW_SKIP": "all"}).returncode == 1
    typo = _pytest(root, {**env, "DEEPWRITER_ALLOW_SKIP": "chrome"})
    assert typo.returncode != 0 and "DEEPWRITER_ALLOW_SKIP: unknown ['chrome']" in typo.stdout + typo.stderr


TEST_X = "\n\ndef test_x():\n    pass\n"
MODULE_SKIPS = {
    "test_module_skip.py": 'import pytest\n\npytest.skip("not today", allow_module_level=True)\n' + TEST_X,
    "test_importorskip.py": 'import pytest\n\npytest.importorskip("no_such_module_here")\n' + TEST_X,
    "test_xfail.py": (
        "import pytest\n\n\n@pytest.mark.xfail(reason='known bug')\ndef test_fails():\n    assert False\n\n\n"
        "@pytest.mark.xfail(reason='fixed already')\ndef test_passes():\n    pass\n"
    ),
    "test_plain.py": "def test_fine():\n    pass\n",
}


def _checkout(tmp_path: Path, files: dict) -> Path:
    root = tmp_path / "checkout"
    (root / "tests").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", root / "tests" / "conftest.py")
    for name, text in files.items():
        (root / "tests" / name).write_text(text)
    return root


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DEEPWRITER_CACHE": str(tmp_path / "user-cache"), **extra}
    for name in ("DEEPWRITER_ALLOW_SKIP", "CI"):
        if name not in extra:
            env.pop(name, None)
    return env


def test_a_module_level_skip_an_importorskip_and_an_xfail_fail_the_run(tmp_path):
    root = _checkout(tmp_path, MODULE_SKIPS)
    done = _pytest(root, _env(tmp_path))
    out = done.stdout
    assert done.returncode == 1, out[-3000:]
    assert "skipped without an opt-out: the run fails" in out
    assert "tests/test_module_skip.py: Skipped: not today" in out
    assert re.search(r"tests/test_importorskip\.py: .*could not import 'no_such_module_here'", out), out[-3000:]
    assert "test_xfail.py::test_fails: xfail (known bug): xfails are not allowed" in out
    assert "test_xfail.py::test_passes: xfail (fixed already): xfails are not allowed" in out  # passing or not
    # a file that vanishes at collection fails even when it is all there is
    alone = _checkout(tmp_path / "alone", {"test_module_skip.py": MODULE_SKIPS["test_module_skip.py"]})
    only = _pytest(alone, _env(tmp_path))
    assert only.returncode == 1 and "tests/test_module_skip.py: Skipped: not today" in only.stdout, only.stdout


def test_ci_refuses_every_skip_switch(tmp_path):
    """`.ci/run` refuses DEEPWRITER_ALLOW_SKIP before it runs anything, as it refuses the golden-update
    switch; a pytest with CI set refuses it too. `make` here is a stand-in that says it ran."""
    root = _checkout(tmp_path, {"test_plain.py": MODULE_SKIPS["test_plain.py"]})
    refused = _pytest(root, _env(tmp_path, CI="true", DEEPWRITER_ALLOW_SKIP="vllm"))
    assert refused.returncode == 4, refused.stdout + refused.stderr  # a usage error: no test ran
    assert "DEEPWRITER_ALLOW_SKIP is set in CI" in refused.stdout + refused.stderr
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text('#!/bin/sh\necho "make ran: $*"\n')
    (bin_dir / "make").chmod(0o755)
    env = {**_env(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    ci = subprocess.run(
        [str(REPO / ".ci" / "run")], env={**env, "DEEPWRITER_ALLOW_SKIP": "all"}, capture_output=True, text=True
    )
    assert ci.returncode == 2 and "make ran" not in ci.stdout, ci.stdout + ci.stderr
    assert "DEEPWRITER_ALLOW_SKIP=all is refused in CI" in ci.stderr
    passed = subprocess.run([str(REPO / ".ci" / "run")], env=env, capture_output=True, text=True)
    assert passed.returncode == 0 and passed.stdout.strip() == "make ran: test", passed.stdout + passed.stderr


OWN_ENGINES = {
    # collected first, but must run last: its run would start a vLLM engine of its own
    "test_a_own_engines.py": """
import json, os

import conftest


def test_starts_its_own_engines(own_vllm_engines):
    with open(os.environ["ORDER"], "a") as f:
        f.write("own\\n")
    (server,) = conftest._session_vllm
    assert server.proc is None and server.pgid and not os.path.exists(f"/proc/{server.pgid}")
""",
    "test_b_session_server.py": """
import os, signal, subprocess

import pytest

import conftest


class StandIn:
    \"\"\"The session's server as a process group of its own (a real one would be `make serve`).\"\"\"

    proc = None
    pgid = 0

    def start(self):
        self.proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
        self.pgid = self.proc.pid
        return self

    def kill(self):
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def _session_vllm_server():
    server = StandIn().start()
    conftest._session_vllm.append(server)
    yield server
    server.kill()


def test_one(vllm_server):
    with open(os.environ["ORDER"], "a") as f:
        f.write("session\\n")
    assert vllm_server.proc is not None


def test_two(vllm_server):
    with open(os.environ["ORDER"], "a") as f:
        f.write("session\\n")
    assert vllm_server.proc is not None
""",
}


def test_tests_with_their_own_vllm_engines_run_last_and_stop_the_sessions_server(tmp_path):
    """Two vLLM engines never share the cores: the served-demo tests (own_vllm_engines) are ordered after
    every user of the session's server, which they stop first; no start-up is added."""
    root = _checkout(tmp_path, OWN_ENGINES)
    order = tmp_path / "order"
    done = _pytest(root, _env(tmp_path, ORDER=str(order)))
    assert done.returncode == 0, done.stdout[-3000:]
    assert order.read_text().split() == ["session", "session", "own"]
