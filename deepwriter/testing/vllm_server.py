"""A real vLLM server for integration tests, started the way users start it: `make serve MODEL=...
PORT=...` (vLLM's own environment, `.venv-serve`). The server runs in its own process group, so
`kill()` is a kill -9 of everything it started (API server, engine core), as a crash would be."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional

import httpx

REPO = Path(__file__).resolve().parents[2]  # the checkout (tests run from one)
SERVE_STAMP = REPO / ".venv-serve" / ".deepwriter-serve-installed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    def __init__(self, preset: str, log_path: Path, port: Optional[int] = None, extra: str = ""):
        self.preset, self.log_path, self.extra = preset, Path(log_path), extra
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.startup_s: List[float] = []  # seconds from `make serve` to the first answer, per start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 420.0, cmd: Optional[List[str]] = None) -> "VLLMServer":
        """Start the server (`make serve` unless `cmd` says otherwise) and wait for its first answer."""
        t0 = time.monotonic()
        log = open(self.log_path, "ab")
        if cmd is None:
            cmd = ["make", "--no-print-directory", "serve", f"MODEL={self.preset}", f"PORT={self.port}"]
            if self.extra:
                cmd.append(f"SERVE_ARGS={self.extra}")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`{' '.join(cmd)}` exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2.0).status_code == 200:
                    self.startup_s.append(time.monotonic() - t0)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(2.0)
        self.kill()
        raise TimeoutError(f"vLLM did not answer within {timeout_s:.0f} s; see {self.log_path}")

    def kill(self) -> None:
        """kill -9 of the whole server (every process of its group), then wait for the port to close."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)
        self.proc = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/models", timeout=1.0)
            except httpx.HTTPError:
                return
            time.sleep(0.5)
