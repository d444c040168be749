"""`python -m bench [NAME ...] [-- ARG ...]` (or `make bench ARGS="..."`): runs every benchmark module
in bench/ (or the named ones) one after another, each in its own process, and prints their figures; the
arguments after `--` go to each named module. Not part of the tests. The GPU acceptance check
(bench/gpu_check.py) runs only when named."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def available() -> list[str]:
    return sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))


# Runs only when named (or through `make gpu-check`): it needs a GPU, and `--tiny` is its CPU test.
NAMED_ONLY = ("gpu_check",)


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    names = argv or [n for n in available() if n not in NAMED_ONLY]
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"bench: unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        t0 = time.time()
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}", *extra])
        print(f"=== bench.{name}: exit {rc} after {time.time() - t0:.0f}s ===", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"bench: failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
