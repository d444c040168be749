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
