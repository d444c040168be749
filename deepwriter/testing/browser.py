"""Open a report in headless Chromium: the rendered DOM, a screenshot, the time to first render.

A probe is a script run in the page after the viewer (clicks, reads); it writes what it finds into
the DOM, which --dump-dom brings back. It runs on a copy of the page beside the original (so the
chunk files resolve the same), removed afterwards. --virtual-time-budget lets the chunk scripts the
probe's clicks load arrive before the DOM is dumped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import List, Optional, Tuple

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 20


def find_chromium() -> Optional[str]:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _flags() -> List[str]:
    flags = ["--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Chromium refuses to run as root inside its sandbox
        flags.append("--no-sandbox")
    return flags


def _with_probe(page: Path, probe: Optional[str]) -> Tuple[Path, bool]:
    if not probe:
        return page, False
    copy = page.with_name(f".{page.stem}.probe.html")
    html = page.read_text(encoding="utf-8")
    at = html.rfind("</body>")
    copy.write_text(html[:at] + f"<script>{probe}</script>\n" + html[at:], encoding="utf-8")
    return copy, True


def _run(args: List[str], timeout: float) -> Tuple[str, str]:
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium binary found (tried " + ", ".join(CANDIDATES) + ")")
    out = subprocess.run([browser, *_flags(), *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"chromium exited {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout, out.stderr


def open_page(
    page: Path, probe: Optional[str] = None, budget_ms: int = 5000, timeout: float = TIMEOUT_S
) -> Tuple[str, List[str]]:
    """(the page's DOM after it rendered and the probe ran, as HTML text; every message the page
    wrote to the console, uncaught errors included, as Chromium logs them)."""
    target, temporary = _with_probe(Path(page).resolve(), probe)
    try:
        # budget_ms 0: no virtual time, so that performance.now() in a probe measures real time
        budget = [f"--virtual-time-budget={budget_ms}"] if budget_ms else []
        dom, log = _run(["--enable-logging=stderr", "--v=0", *budget, "--dump-dom", target.as_uri()], timeout)
    finally:
        if temporary:
            target.unlink()
    return dom, [line for line in log.splitlines() if ":CONSOLE" in line]


def screenshot(
    page: Path,
    png: Path,
    probe: Optional[str] = None,
    size: Tuple[int, int] = (1400, 1000),
    budget_ms: int = 5000,
    timeout: float = TIMEOUT_S,
) -> Path:
    target, temporary = _with_probe(Path(page).resolve(), probe)
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    try:
        _run(
            [
                f"--screenshot={png}",
                f"--window-size={size[0]},{size[1]}",
                f"--virtual-time-budget={budget_ms}",
                target.as_uri(),
            ],
            timeout,
        )
    finally:
        if temporary:
            target.unlink()
    return png


def render_time(page: Path, timeout: float = 60) -> Tuple[float, float]:
    """(ms from navigation start to the viewer's first render, as the page records it; wall seconds
    of the whole browser call)."""
    import re

    t0 = time.perf_counter()
    dom, _ = _run(["--dump-dom", Path(page).resolve().as_uri()], timeout)
    wall = time.perf_counter() - t0
    found = re.search(r'data-render-ms="([\d.]+)"', dom)
    if not found:
        raise RuntimeError(f"{page}: the page did not render (no data-render-ms in its DOM)")
    return float(found.group(1)), wall


# The README's pictures: the synthesis table with the pair of most accepted rewrites open, and the eval
# section with its first item open; the other sections hidden so that each fits one picture.
_SHOW_ONLY = """
(function () {
  var keep = "%s";
  document.querySelectorAll("section.stage").forEach(function (s) { if (s.id !== keep) s.hidden = true; });
  var rows = Array.prototype.slice.call(document.querySelectorAll("#" + keep + " tr.row"));
  var column = %d;
  if (column >= 0) rows.sort(function (a, b) {
    return parseFloat(b.children[column].textContent) - parseFloat(a.children[column].textContent);
  });
  if (rows.length) rows[0].click();
})();
"""
README_SHOTS = {"report-synthesis.png": ("synthesis-0", 7, 1600), "report-eval.png": ("eval-0", -1, 1300)}


def show_only(section: str, column: int = -1) -> str:
    """A probe that hides every section but `section` and opens its first row (by `column`, descending)."""
    return _SHOW_ONLY % (section, column)


def readme_screenshots(page: Path, folder: Path) -> List[Path]:
    return [
        screenshot(page, Path(folder) / name, probe=show_only(section, column), size=(1400, height))
        for name, (section, column, height) in README_SHOTS.items()
    ]


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m deepwriter.testing.browser", description="Screenshots of a report.")
    ap.add_argument("page", type=Path, help="a report.html")
    ap.add_argument("--out", type=Path, default=Path("docs/img"), help="where report-synthesis.png etc. go")
    args = ap.parse_args(argv)
    for png in readme_screenshots(args.page, args.out):
        print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
