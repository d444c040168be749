"""The checkout the tests run from, and the small helpers the tests share: composed configs, the
training CLI as a user runs it, real benchmark files, a W&B tracker that logs nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from deepwriter.config.compose import compose
from deepwriter.config.root import to_typed
from deepwriter.tracking.runs import Tracker

REPO = Path(__file__).resolve().parents[2]
# the shared data (benchmarks, seed pairs): beside the checkout, or where DEEPWRITER_SHARED points
SHARED = Path(os.environ.get("DEEPWRITER_SHARED") or REPO.parent / "shared")
FIXTURES = REPO / "tests" / "fixtures"
SEED_PAIRS = "seed_pairs/hellobench_gpt4o_0806.jsonl"


def compose_typed(*overrides: str):
    """The typed RootConfig that `python -m deepwriter.train OVERRIDES` would run."""

    return to_typed(compose(list(overrides)))


def run_train(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deepwriter.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def bench_overrides(shared: Path) -> list:
    """Overrides that point every benchmark of eval=full at its real data under shared/benchmarks."""
    b = shared / "benchmarks"
    return [
        "eval=full",
        f"eval.benchmarks.hellobench.path={b}/hellobench",
        f"eval.benchmarks.longbench_write.path={b}/longbench_write/longbench_write.jsonl",
        f"eval.benchmarks.writingbench.path={b}/writingbench/length_subset.jsonl",
    ]


class NullTracker:
    """A stage tracker factory whose tracker logs nothing."""

    def __init__(self, *a, **k):
        pass

    def __enter__(self):
        return Tracker(None)

    def __exit__(self, *exc):
        return False


def wait_for(cond, proc, timeout: float, what: str, poll_s: float = 0.1, stderr=None, kill: bool = True):
    """cond()'s first truthy value while the run `proc` goes on; fails with the run's stderr if it exits
    first (`stderr`: a callable giving it, for a run writing to a file; default: proc.stderr, piped),
    and after `timeout` seconds kills the run unless `kill` is False (a caller that stops it its own
    way: SIGTERM first, so the run stops its servers)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        if proc.poll() is not None:
            text = stderr() if stderr is not None else proc.stderr.read()
            raise AssertionError(f"the run exited ({proc.returncode}) before {what}: {text[-3000:]}")
        time.sleep(poll_s)
    if kill:
        proc.kill()
    raise AssertionError(f"no {what} within {timeout} s")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child its reaper has not reaped yet, which
    holds no memory or port). Read from /proc, not from the fleet's own helper it checks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def fleet_state(run_dir: Path) -> dict:
    """The servers a run's fleet says are running (`<run>/servers/fleet.json`); {} before it writes one."""
    import json

    path = run_dir / "servers" / "fleet.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def process_group(pgid: int) -> List[int]:
    """The running members of process group `pgid`, as the operating system lists them (`pgrep -g`),
    not as the fleet's own helper does; zombies left out (they hold no memory or port)."""
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return [p for p in map(int, found.stdout.split()) if alive(p)]


def port_holders(port: int) -> set:
    """The processes with a listening TCP socket on `port`, from the kernel's own tables (/proc/net/tcp
    and tcp6, then each process's open files): who really serves there, whatever a state file says."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    holders = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                holders.add(int(fd_dir.parent.name))
        except OSError:  # it ended while we looked, or is not ours to read
            continue
    return holders


def replica_now(run_dir: Path, group: str, not_pid: int = 0) -> Optional[Tuple[dict, List[int]]]:
    """The group's one replica in the run's fleet.json, once it has a pid other than `not_pid` and its
    process group (as the OS lists it) holds the replica's port: the server, with every process it
    started, captured while it runs (after the run it is gone)."""
    running = fleet_state(run_dir).get("running", {}).get(group)
    if not running or not running[0].get("pid") or running[0]["pid"] == not_pid:
        return None
    members = process_group(running[0]["pid"])
    # the state file's pid is checked against the kernel: its group is the one listening on the port
    if not members or not port_holders(running[0]["port"]) & set(members):
        return None
    return running[0], members


def gone(members, port: int) -> None:
    """Every process of a server's group has ended and nothing listens on its port any more: checked
    from the OS's side."""
    left = [p for p in members if alive(p)]
    assert left == [], f"server processes still running: {left}"
    assert not port_holders(port), f"port {port} still held by {sorted(port_holders(port))}"
