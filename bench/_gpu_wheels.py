"""The wheels `bench.gpu_check` carries to a GPU machine that reaches no package index.

Such a machine (this project's lent H100/H200, as last seen: Python 3.12, torch 2.11 with CUDA 13,
transformers 5.17, accelerate 1.15, peft, pandas, pyarrow, numpy, psutil, ninja, msgpack ...) lacks TRL,
DeepSpeed, Hydra/OmegaConf and datasets. `CARRIED` names what the check brings, each at the version
this checkout's environment runs (so the GPU runs the versions the CPU test suite runs):

- the project's own pins for the SFT and scorer path: transformers (5.23, not the machine's 5.17: the
  CPU suite tests 5.23, and one version on both sides keeps the `--tiny` test a rehearsal of the GPU
  run rather than of another library), TRL, PEFT (TRL imports it when present, and the machine's
  version is unknown), datasets, DeepSpeed, Hydra, OmegaConf;
- what those need that the machine lacks or may hold at an older version: antlr4 (Hydra), dill,
  multiprocess and fsspec (datasets caps fsspec), hjson and pydantic (DeepSpeed), regex (transformers
  5.23 needs a recent one), typing-extensions (pydantic needs a recent one).

W&B is not carried: the check runs with tracking off. DeepSpeed and antlr4 publish only source
archives; they are pure Python (DeepSpeed compiles its ops just in time), so `download` builds their
wheels here. Everything else is fetched for CPython 3.12 on x86-64 manylinux.

    python -m bench._gpu_wheels download [--dest .whl] [--python-version 3.12]   # make gpu-wheels
    python -m bench._gpu_wheels check [--dest .whl]      # what this environment lacks of them

Only the standard library is imported at module level: `gpu_check` runs this before the wheels are
installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO / ".whl"
MANIFEST = "manifest.json"
# The device tool's limit on what travels with the working tree (wheels included).
TRAVEL_LIMIT_BYTES = 64 * 1024**2

CARRIED = (
    "transformers",
    "trl",
    "peft",
    "datasets",
    "deepspeed",
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    "dill",
    "multiprocess",
    "fsspec",
    "hjson",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "regex",
)
# Published as source archives only: built into (pure-Python) wheels here.
BUILT_HERE = ("deepspeed", "antlr4-python3-runtime")
MANYLINUX = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _wheel_name(path: Path) -> str:
    return normalize(path.name.split("-")[0])


def download(dest: Path, python_version: str = "3.12") -> Dict[str, dict]:
    """Fetch (or build) one wheel per carried package, at this environment's version, into `dest`;
    older wheels of the same packages there are removed. Writes and returns the manifest."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = {}
    for name in CARRIED:
        version = installed_version(name)
        if version is None:
            raise SystemExit(f"gpu-wheels: {name} is not installed here; run `make install` first")
        pins[name] = version
    for old in dest.glob("*.whl"):
        if _wheel_name(old) in {normalize(n) for n in CARRIED}:
            old.unlink()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    for i, (name, version) in enumerate(pins.items(), 1):
        spec = f"{name}=={version}"
        print(f"[{i}/{len(pins)}] {spec}", flush=True)
        if name in BUILT_HERE:
            cmd = [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest), spec]
        else:
            cmd = [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python_version]
            cmd += ["--implementation", "cp", *[a for p in MANYLINUX for a in ("--platform", p)], "-d", str(dest), spec]
        subprocess.run(cmd, check=True)
    entries = {}
    for path in sorted(dest.glob("*.whl")):
        name = _wheel_name(path)
        match = next((n for n in pins if normalize(n) == name), None)
        if match is not None:
            entries[match] = {"version": pins[match], "file": path.name, "bytes": path.stat().st_size}
    missing = [n for n in pins if n not in entries]
    if missing:
        raise SystemExit(f"gpu-wheels: no wheel came for {missing}")
    manifest = {"python_version": python_version, "packages": entries}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return entries


def load_manifest(dest: Path) -> Optional[dict]:
    path = dest / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def carried_bytes(dest: Path) -> int:
    return sum(p.stat().st_size for p in dest.glob("*.whl"))


def tree_bytes() -> int:
    """Bytes of the working tree that travels besides the wheels: tracked and untracked-not-ignored files."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((REPO / f).stat().st_size for f in out.decode().split("\0") if f and (REPO / f).is_file())


def outdated(manifest: dict) -> List[str]:
    """The carried packages this environment does not have at the manifest's version."""
    return [
        f"{name} {installed_version(name) or 'missing'} (carried: {entry['version']})"
        for name, entry in manifest["packages"].items()
        if installed_version(name) != entry["version"]
    ]


def install(dest: Path, target: Path) -> None:
    """Install every wheel of `dest` into `target` (put first on PYTHONPATH), offline, without resolving:
    the set is complete by construction, and `unmet_requirements` reports what it leaves open."""
    wheels = sorted(str(p) for p in dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index", "--no-deps"]
    cmd += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target), *wheels]
    subprocess.run(cmd, check=True)


def unmet_requirements(names) -> List[str]:
    """Requirements of the named distributions (extras and other platforms' markers aside) that the
    importable environment does not meet, one line each."""
    from packaging.requirements import Requirement

    problems = []
    for name in names:
        for line in importlib.metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            have = installed_version(req.name)
            if have is None:
                problems.append(f"{name} needs {req}: not installed")
            elif req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} needs {req}: found {have}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["download", "check"])
    ap.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python (wheels are tagged for it)")
    args = ap.parse_args(argv)
    if args.action == "download":
        entries = download(args.dest, args.python_version)
        for e in entries.values():
            print(f"  {e['file']:70s} {e['bytes'] / 1024**2:6.2f} MiB")
    manifest = load_manifest(args.dest)
    if manifest is None:
        print(f"no wheels in {args.dest}: run `make gpu-wheels`")
        return 1
    wheels, tree = carried_bytes(args.dest), tree_bytes()
    print(
        f"carried wheels: {len(manifest['packages'])} packages, {wheels / 1024**2:.1f} MiB; working tree "
        f"{tree / 1024**2:.1f} MiB; together {(wheels + tree) / 1024**2:.1f} of {TRAVEL_LIMIT_BYTES / 1024**2:.0f} MiB"
    )
    if wheels + tree > TRAVEL_LIMIT_BYTES:
        print("too large to travel with the working tree", file=sys.stderr)
        return 1
    if args.action == "check":
        for line in outdated(manifest):
            print(f"  here: {line}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    sys.exit(main())
