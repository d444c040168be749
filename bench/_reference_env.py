"""The environment the REER authors' synthesis code runs in for bench/vs_reference.py: `.venv-reference`
(ignored by git), created here, or by `make reference-install`.

Their code needs Ray, transformers, torch (model_utils.py imports it), pandas, numpy, requests and PyYAML.
All but Ray are in the project's `.venv` already, at versions their code works with; a CPU torch from the
package index would be a second download of the largest of them. So the environment is a virtual
environment of its own that sees `.venv`'s packages through a `.pth` file, with Ray (pinned) installed
into it from PyPI. Nothing of the authors' code is copied: it is run from ../shared as it is.

    python -m bench._reference_env        # create or check it; prints its Python
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = REPO / ".venv-reference"
RAY_PIN = "ray==2.60.0"
STAMP = ENV / ".deepwriter-reference-installed"


def python() -> Path:
    return ENV / "bin" / "python"


def _site_packages(py: Path) -> str:
    return subprocess.check_output(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()


def ensure() -> Path:
    """The reference environment's Python, installing it first when it is missing or its pin changed."""
    if STAMP.is_file() and STAMP.read_text().strip() == RAY_PIN and python().is_file():
        return python()
    print(f"installing the authors' environment into {ENV} ({RAY_PIN}, over .venv's packages) ...", flush=True)
    if not python().is_file():
        subprocess.check_call([sys.executable, "-m", "venv", str(ENV)])
    # .venv's packages (transformers, torch, pandas, numpy, requests, PyYAML) after the environment's own
    own = Path(_site_packages(python()))
    (own / "deepwriter-dot-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.check_call([str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", RAY_PIN])
    subprocess.check_call(
        [str(python()), "-c", "import ray, transformers, torch, pandas, numpy, requests, yaml"],
    )
    STAMP.write_text(RAY_PIN + "\n")
    return python()


if __name__ == "__main__":
    print(ensure())
