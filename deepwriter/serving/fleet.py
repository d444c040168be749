"""A run's own servers: start the replicas of a placed group (deepwriter.serving.placement), check their
health, restart one that died within its group's budget, and stop them all.

How a replica runs is the fleet's spawner (start / ended / address / stop): by default one server
process on this node in its own process group (what `make serve` starts: LocalSpawner), or a SLURM job
of its own on whatever node the scheduler gives it (deepwriter.cluster.jobs.SlurmSpawner, whose
address the fleet reads from the run folder). Its log is under the run folder
(`<log_dir>/<group>-<index>.log`). A watcher thread looks at every replica each `poll_s`: one whose
process (or job) has ended, or that has not answered its health check `unhealthy_after` times in a row,
is stopped and started again while `serving.max_restarts` allows; the seconds from the death being seen
to the replica answering again are its downtime. `close()` stops every server this fleet started
(SIGTERM to the group, SIGKILL after `stop_grace_s`, and waits until its port is free; a job: scancel,
and waits until it has ended); the runner calls it on every way out of a run.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from deepwriter.core.errors import DeepwriterError
from deepwriter.core.files import write_json_atomic
from deepwriter.llm import models
from deepwriter.serving.placement import Layout, Replica
from deepwriter.serving.server import served_name, server_command

log = logging.getLogger("deepwriter.fleet")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the servers are ours: no proxy

# (argv, extra environment) of one replica's server
CommandFor = Callable[[Replica], Tuple[List[str], Dict[str, str]]]


class FleetError(DeepwriterError):
    """A managed server did not come up (its log says why)."""


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# How a replica's server gets the run's API key: vLLM reads it from this variable (as it would from
# --api-key, which would put the key on its command line, in `ps` and in the replica's log); the loopback
# server plays along. A key no other server knows is what tells the run's own server from a stranger's.
KEY_ENV = "VLLM_API_KEY"


def new_key() -> str:
    """A fresh secret for a run's servers (never written to a record, a log or W&B)."""
    return secrets.token_urlsafe(32)


def _models(url: str, key: Optional[str], timeout: float) -> Tuple[Optional[int], bytes]:
    """(HTTP status, body) of GET {url}/models, with `key` as the Bearer token; (None, b"") when nothing answers."""
    req = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with _DIRECT.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, ValueError):  # URLError, a reset or a timeout
        return None, b""


def identify(
    url: str, name: Optional[str], timeout: float = 5.0, key: Optional[str] = None
) -> Tuple[bool, Optional[str]]:
    """(whether the server at `url` answers as ours, why it is not ours): GET {url}/models. Ours lists
    `name` (None: any model) and, with the run's `key`, accepts that key and refuses any other. A server
    that answers otherwise is someone else's (another user's server on the same node and port); one that
    does not answer yet is neither (False, None)."""
    status, body = _models(url, key, timeout)
    if status in (401, 403) and key:
        return False, f"the server at {url} refuses the run's API key: not ours"
    if status != 200:
        return False, None
    if name is not None:
        try:
            ids = [m.get("id") for m in json.loads(body).get("data", [])]
        except (ValueError, AttributeError, TypeError):
            ids = []
        if name not in ids:
            return False, f"the server at {url} answers but serves {ids or 'no model list'}, not {name!r}: not ours"
    if key:
        wrong, _ = _models(url, new_key(), timeout)
        if wrong is None:
            return False, None  # it stopped answering between the two questions: ask again
        if wrong not in (401, 403):
            return False, f"the server at {url} answers a key that is not the run's (HTTP {wrong}): not ours"
    return True, None


def group_members(pgid: int) -> List[int]:
    """The processes of process group `pgid` that still run (Linux /proc; a zombie, which holds no
    memory, port or GPU, is not counted: its reaper may be an init that never reaps)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended while we looked
            continue
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


class Spawner(Protocol):
    """How the fleet runs one replica: `start` returns a handle (a process, a job); `ended` is None while
    it runs or waits to run, else why it ended; `waiting` says why it has not started yet (a job in the
    queue), None once it runs; `address` is its `host:port` once known."""

    def start(self, rep: Replica, argv: List[str], env: Dict[str, str], log_path: Path) -> Any: ...

    def ended(self, handle: Any) -> Optional[str]: ...

    def waiting(self, handle: Any) -> Optional[str]: ...

    def address(self, rep: Replica, handle: Any) -> Optional[str]: ...

    def stop(self, rep: Replica, handle: Any, graceful: bool) -> None: ...

    def describe(self, rep: Replica, handle: Any) -> Dict[str, object]: ...


@dataclass
class _Running:
    replica: Replica
    log_path: Path
    proc: Any = None  # the spawner's handle: a subprocess.Popen here, a job (deepwriter.cluster.jobs)
    started: float = 0.0
    misses: int = 0  # health checks missed in a row
    starting: bool = False  # up() is waiting for its first answer: the watcher leaves it alone
    restarting: bool = False
    down_since: Optional[float] = None
    stranger: Optional[str] = None  # its address answered as someone else's server (identify)


@dataclass
class GroupStats:
    restarts: int = 0
    deaths: int = 0
    down_s: float = 0.0
    startup_s: List[float] = field(default_factory=list)  # seconds to the first answer, per start


class Fleet:
    def __init__(
        self,
        layout: Layout,
        command_for: CommandFor,
        log_dir: Path,
        host: str = "127.0.0.1",
        poll_s: float = 2.0,
        unhealthy_after: int = 5,
        stop_grace_s: float = 20.0,
        spawner: Optional[Spawner] = None,
        served_name_of: Optional[Callable[[str], str]] = None,
        key: Optional[str] = None,
    ):
        self.layout, self.command_for, self.log_dir, self.host = layout, command_for, Path(log_dir), host
        # the model name a group's servers answer with (/v1/models): a server that lists another is not
        # ours and is sent nothing; None: any answer is taken as ours
        self.served_name_of = served_name_of
        # the run's API key, handed to every replica's server (KEY_ENV): a server that does not take it,
        # or takes any other, is not ours; None: servers without a key
        self.key = key
        self.poll_s, self.unhealthy_after, self.stop_grace_s = poll_s, unhealthy_after, stop_grace_s
        self.spawner: Spawner = spawner or LocalSpawner(host, stop_grace_s)
        self.running: Dict[str, List[_Running]] = {}
        self.stats: Dict[str, GroupStats] = {g: GroupStats() for g in layout.groups}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._watcher: Optional[threading.Thread] = None

    # --- what callers read ---------------------------------------------------------------------------

    def url(self, r: Replica) -> str:
        """The replica's URL: where its process or job said it listens, else this fleet's host and its port."""
        for x in self.running.get(r.group, []):
            if x.replica == r and x.proc is not None:
                where = self.spawner.address(r, x.proc)
                if where:
                    return f"http://{where}/v1"
        return f"http://{self.host}:{r.port}/v1"

    def urls(self, group: str) -> List[str]:
        return [self.url(r.replica) for r in self.running.get(group, [])]

    def deaths(self) -> int:
        return sum(s.deaths for s in self.stats.values())

    def healthy(self) -> bool:
        """Every replica of every running group is up and answered its last check."""
        with self._lock:
            return all(r.down_since is None and r.proc is not None for rs in self.running.values() for r in rs)

    def write_state(self) -> None:
        """`<log_dir>/fleet.json`: every running replica (pid, port, URL, GPUs) and the counts so far."""

        with self._lock:
            state = {
                "running": {
                    g: [
                        {
                            "index": r.replica.index,
                            "port": r.replica.port,
                            "url": self.url(r.replica),
                            "devices": list(r.replica.devices),
                            **(self.spawner.describe(r.replica, r.proc) if r.proc is not None else {"pid": None}),
                            "log": str(r.log_path),
                        }
                        for r in rs
                    ]
                    for g, rs in self.running.items()
                },
                "stats": self.summary(),
            }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.log_dir / "fleet.json", state)

    def summary(self) -> Dict[str, Dict[str, object]]:
        return {
            g: {
                "replicas": len(self.layout.replicas.get(g, [])),
                "restarts": s.restarts,
                "deaths": s.deaths,
                "down_s": round(s.down_s, 3),
                "startup_s": [round(x, 1) for x in s.startup_s],
            }
            for g, s in self.stats.items()
        }

    # --- start and stop ------------------------------------------------------------------------------

    def up(self, group: str) -> List[str]:
        """Start every replica of the group and wait until each answers; their URLs."""
        with self._lock:
            if group in self.running:
                return self.urls(group)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            rs = [
                _Running(r, self.log_dir / f"{group}-{r.index}.log".replace("/", "_"), starting=True)
                for r in self.layout.replicas[group]
            ]
            self.running[group] = rs
            for r in rs:
                self._spawn(r)
        try:  # a watcher of an earlier group may run: it must not take a slow start for a dead server
            for r in rs:
                self._wait_ready(r)
        finally:
            for r in rs:
                r.starting = False
        self._ensure_watcher()
        self.write_state()
        log.info("fleet: %s up at %s", group, ", ".join(self.urls(group)))
        return self.urls(group)

    def down(self, group: str) -> None:
        with self._lock:
            rs = self.running.pop(group, [])
        for r in rs:
            self._kill(r, graceful=True)
        if rs:
            self.write_state()
            log.info("fleet: %s stopped", group)

    def close(self) -> None:
        """Stop every server this fleet started; safe to call more than once."""
        self._stop.set()
        for group in list(self.running):
            self.down(group)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=self.poll_s + 5)

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- healing --------------------------------------------------------------------------------------

    def heal(self, wait_s: Optional[float] = None) -> bool:
        """Look at every replica now, restart the dead ones within their budget and wait until the fleet
        is healthy: True when it is, False when a group's restart budget is spent."""
        self.check()
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while not self.healthy():
            if self._spent():
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(min(self.poll_s, 1.0))
            if self._watcher is None or not self._watcher.is_alive():
                self.check()
        return True

    def _spent(self) -> bool:
        with self._lock:
            for group, rs in self.running.items():
                budget = self.layout.groups[group].serving.max_restarts
                if any(r.proc is None and not r.restarting for r in rs) and self.stats[group].restarts >= budget:
                    return True
        return False

    def check(self) -> None:
        """One look at every replica: a dead or unanswering one is restarted within its budget."""
        with self._lock:
            items = [(g, r) for g, rs in self.running.items() for r in rs]
        for group, r in items:
            if self._stop.is_set():
                return
            if r.restarting or r.starting:  # the other thread (watcher, heal or up) is at it
                continue
            if r.proc is None:  # dead, not restarted: the budget was spent (or a restart failed)
                self._try_restart(group, r)
                continue
            ended = self.spawner.ended(r.proc)
            if ended is None:
                if self._answers(r):
                    r.misses = 0
                    continue
                r.misses += 1
                if r.misses < self.unhealthy_after:
                    continue
            self._died(group, r, ended or f"no answer {r.misses} times")
            self._try_restart(group, r)

    def _died(self, group: str, r: _Running, why: str) -> None:
        with self._lock:
            r.down_since = time.monotonic()
            self.stats[group].deaths += 1
        log.warning(
            "fleet: %s replica %d (port %d) %s; see %s", group, r.replica.index, r.replica.port, why, r.log_path
        )
        self._kill(r, graceful=False)

    def _try_restart(self, group: str, r: _Running) -> None:
        budget = self.layout.groups[group].serving.max_restarts
        with self._lock:
            if group not in self.running or r.restarting or self.stats[group].restarts >= budget:
                return
            self.stats[group].restarts += 1
            r.restarting = True
        log.warning(
            "fleet: restarting %s replica %d (restart %d of %d)",
            group,
            r.replica.index,
            self.stats[group].restarts,
            budget,
        )
        try:
            self._spawn(r)
            self._wait_ready(r)
        except FleetError as exc:
            log.warning("fleet: %s", exc)
            self._kill(r, graceful=False)
            return
        finally:
            r.restarting = False
        with self._lock:
            if r.down_since is not None:
                self.stats[group].down_s += time.monotonic() - r.down_since
                r.down_since = None
        self.write_state()
        log.info("fleet: %s replica %d back at %s", group, r.replica.index, self.url(r.replica))

    def _ensure_watcher(self) -> None:
        if self._watcher is not None and self._watcher.is_alive():
            return

        def watch() -> None:
            while not self._stop.wait(self.poll_s):
                try:
                    self.check()
                except Exception as exc:  # noqa: BLE001 - the watcher must outlive one bad look
                    log.warning("fleet: watcher: %s: %s", type(exc).__name__, exc)

        self._watcher = threading.Thread(target=watch, name="deepwriter-fleet", daemon=True)
        self._watcher.start()

    # --- one replica ----------------------------------------------------------------------------------

    def _spawn(self, r: _Running) -> None:
        argv, extra_env = self.command_for(r.replica)
        if self.key:
            extra_env = {**extra_env, KEY_ENV: self.key}
        with open(r.log_path, "ab") as logf:
            logf.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        r.proc = self.spawner.start(r.replica, argv, extra_env, r.log_path)
        r.started, r.misses, r.stranger = time.monotonic(), 0, None

    def _answers(self, r: _Running, timeout: float = 5.0) -> bool:
        """Its address answers /v1/models as our server (urllib, not httpx: a health check every poll_s
        stays out of the run's log); an answer of someone else's server sets `r.stranger`."""
        if r.proc is None or self.spawner.address(r.replica, r.proc) is None:
            return False
        name = self.served_name_of(r.replica.group) if self.served_name_of else None
        ours, r.stranger = identify(self.url(r.replica), name, timeout, self.key)
        return ours

    def _wait_ready(self, r: _Running) -> None:
        """Wait until the replica answers: while its job waits in the queue, up to serving.queue_timeout_s
        (saying why it waits); from its start, up to serving.startup_timeout_s."""
        serving = self.layout.groups[r.replica.group].serving
        name = f"{r.replica.group} replica {r.replica.index}"
        said, running_since = None, None
        while True:
            handle = r.proc
            if handle is None or self._stop.is_set():
                raise FleetError(f"{name} was stopped while starting")
            ended = self.spawner.ended(handle)
            if ended is not None:
                raise FleetError(f"{name} {ended} while starting; see {r.log_path}")
            now = time.monotonic()
            queued = self.spawner.waiting(handle) if running_since is None else None
            if queued is not None:
                if now - r.started > serving.queue_timeout_s:
                    raise FleetError(
                        f"{name} waited {now - r.started:.0f} s in the queue and did not start: {queued} "
                        "(serving.queue_timeout_s)"
                    )
                if queued != said:
                    log.info("fleet: %s waits in the queue: %s", name, queued)
                    said = queued
                time.sleep(0.5)
                continue
            if running_since is None:
                running_since = now
                if said is not None:
                    log.info("fleet: %s started after %.0f s in the queue", name, now - r.started)
            if self._answers(r, timeout=2.0):
                self.stats[r.replica.group].startup_s.append(time.monotonic() - running_since)
                return
            if r.stranger:  # its own server cannot have that address: it will not come up there
                raise FleetError(f"{name}: {r.stranger}; see {r.log_path}")
            if now - running_since >= serving.startup_timeout_s:
                raise FleetError(
                    f"{name} did not answer within {serving.startup_timeout_s:.0f} s of its start "
                    f"(serving.startup_timeout_s); see {r.log_path}"
                )
            time.sleep(0.5)

    def _kill(self, r: _Running, graceful: bool) -> None:
        handle, r.proc = r.proc, None
        if handle is not None:
            self.spawner.stop(r.replica, handle, graceful)


def free_port(host: str) -> int:
    """A port nothing listens on at `host`, as the OS hands one out."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def with_port(argv: List[str], own: int, port: int) -> List[str]:
    """The replica's command with its planned port `own` (every argument that is exactly it) made `port`."""
    return [str(port) if a == str(own) else a for a in argv]


class LocalSpawner:
    """A replica as a server process on this node, in a process group of its own, on the GPUs placement
    gave it; stopped with SIGTERM to its group (SIGKILL after `stop_grace_s`), its port free after.

    It listens on its planned port (base_port + index) when that is free, else on one the OS gives: a
    port another program holds (another run's server, someone else's) is never waited for nor used, so
    two runs on one machine never collide. The port it got is the process's `port` attribute."""

    def __init__(self, host: str = "127.0.0.1", stop_grace_s: float = 20.0):
        self.host, self.stop_grace_s = host, stop_grace_s
        self.last_port: Dict[Tuple[str, int], int] = {}  # a restarted replica keeps its URL where it can

    def start(self, rep: Replica, argv: List[str], extra_env: Dict[str, str], log_path: Path) -> subprocess.Popen:
        env = {**os.environ, **extra_env}
        if rep.devices:
            env["CUDA_VISIBLE_DEVICES"] = rep.cuda_visible_devices
        port = self.last_port.get((rep.group, rep.index), rep.port)
        if not port_free(self.host, port):
            port = rep.port if port != rep.port and port_free(self.host, rep.port) else free_port(self.host)
        self.last_port[(rep.group, rep.index)] = port
        if port != rep.port:
            log.info("fleet: port %d of %s replica %d is taken: it listens on %d", rep.port, rep.group, rep.index, port)
            argv = with_port(argv, rep.port, port)
        with open(log_path, "ab") as logf:
            if port != rep.port:
                logf.write(f"deepwriter: port {rep.port} is taken: this replica listens on {port}\n".encode())
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        proc.port = port  # type: ignore[attr-defined]
        return proc

    def ended(self, proc: subprocess.Popen) -> Optional[str]:
        return None if proc.poll() is None else f"exited with {proc.returncode}"

    def waiting(self, proc: subprocess.Popen) -> Optional[str]:
        return None  # a process runs from its start

    def address(self, rep: Replica, proc: subprocess.Popen) -> Optional[str]:
        return f"{self.host}:{proc.port}"  # type: ignore[attr-defined]

    def describe(self, rep: Replica, proc: subprocess.Popen) -> Dict[str, object]:
        return {"pid": proc.pid, "port": proc.port}  # type: ignore[attr-defined]

    def stop(self, rep: Replica, proc: subprocess.Popen, graceful: bool) -> None:
        if proc.poll() is None or graceful:
            try:
                os.killpg(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=self.stop_grace_s if graceful else 30)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever is left of its group (an engine process of vLLM)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log.warning("fleet: pid %d did not exit after SIGKILL", proc.pid)
        # the leader's exit is not its group's: vLLM's engine process may outlive its API server briefly
        deadline = time.monotonic() + 30
        while group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_members(proc.pid):
            log.warning("fleet: processes %s of server %d still run after SIGKILL", group_members(proc.pid), proc.pid)
        deadline = time.monotonic() + 30
        while not port_free(self.host, proc.port) and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.2)


# --- the servers a run starts ---------------------------------------------------------------------------


def server_command_for(models_by_group: Dict[str, object], python: str, host: str, cache_dir: str) -> CommandFor:
    """The command of `make serve` (deepwriter.serving.server.server_command) for a replica of a group, with
    its tensor-parallel size and engine arguments; on the CPU vLLM's KV-cache space (GiB). A preset with
    its own `serving.command` gets that, filled in. `models_by_group` is read at each start, so a
    group's model may be set just before it comes up (eval's model under test)."""
    import sys

    def command(rep: Replica) -> Tuple[List[str], Dict[str, str]]:
        cfg = models_by_group[rep.group]
        s = cfg.serving
        if s.command:
            where = models.resolve(cfg, cache_dir)[0] if any("{model}" in a for a in s.command) else ""
            fill = {
                "python": sys.executable,
                "model": where,
                "served_name": served_name(cfg),
                "name": cfg.name,
                "host": host,
                "port": rep.port,
                "tensor_parallel": s.tensor_parallel,
                "cache_dir": cache_dir,
            }
            return [a.format(**fill) for a in s.command] + list(s.engine_args), {}
        extra = list(s.engine_args)
        if s.tensor_parallel > 1:
            extra += ["--tensor-parallel-size", str(s.tensor_parallel)]
        argv = server_command(cfg, python, rep.port, host, cache_dir, bool(rep.devices), extra)
        env = {} if rep.devices else {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
        return argv, env

    return command


def served_name_for(models_by_group: Dict[str, object]) -> Callable[[str], str]:
    """The name a group's servers list in /v1/models (their --served-model-name), read at each look."""

    return lambda group: served_name(models_by_group[group])


class stop_on_signals:
    """Within it, SIGTERM (and SIGHUP) raise SystemExit in the main thread like Ctrl-C raises
    KeyboardInterrupt, so every `finally` and `with` on the way out runs: a fleet's close() included.
    The previous handlers come back on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self) -> "stop_on_signals":
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame) -> None:
        raise SystemExit(128 + signum)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
