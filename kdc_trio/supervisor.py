"""`kdc-trio serve --workers N`: N gateway processes on one port, kept alive and drained together.

Each child is a whole `kdc-trio serve` (gateway + in-process worker unless `--no-worker`) that binds
the same port with `SO_REUSEPORT`, so the kernel spreads new connections over them. They form one
deployment through Redis (sessions, relay, turn queue), which is why `--workers` needs `REDIS_URL`:
without it each process would be an island and a session's connections on two of them would miss
each other's events.

The supervisor:
- starts the children and waits (with a deadline) until every one is listening;
- restarts a child that dies, with a back-off that grows while children die young
  (`RESTART_BACKOFF_*`), so a crash loop cannot spin the CPU;
- on SIGTERM/SIGINT forwards SIGTERM to every child (each drains: streams get `server_shutdown`),
  waits `KDC_SHUTDOWN_GRACE_S` plus a margin, then SIGKILLs what is left, and exits.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kdc_trio.config import Settings

log = logging.getLogger("kdc_trio.supervisor")

# A child that lived less than this died "young": the next restart waits longer.
YOUNG_S = 10.0
# Back-off between restarts of a child that keeps dying young: doubles from MIN up to MAX.
RESTART_BACKOFF_MIN_S = 0.2
RESTART_BACKOFF_MAX_S = 10.0
# Time every child has to start listening before the supervisor gives up.
START_TIMEOUT_S = 60.0
# After the children's own grace period, how long before the supervisor SIGKILLs them.
STOP_MARGIN_S = 5.0


class WorkersNeedRedis(SystemExit):
    def __init__(self) -> None:
        super().__init__("kdc-trio serve --workers N needs REDIS_URL: the worker processes share sessions, "
                         "the relay and the turn queue through Redis. Set REDIS_URL=redis://host:6379/0, "
                         "or run one process without --workers.")


def child_command(args: list[str]) -> list[str]:
    """How to start `kdc-trio <args>` again: the frozen executable itself, or this Python."""
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "kdc_trio", *args]


def pick_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Child:
    index: int
    port_file: Path
    proc: trio.Process | None = None
    restarts: int = 0
    listening: trio.Event = field(default_factory=trio.Event)


class Supervisor:
    def __init__(self, settings: Settings, workers: int, serve_args: list[str]) -> None:
        if workers < 1:
            raise SystemExit("--workers must be at least 1")
        if not settings.redis_url:
            raise WorkersNeedRedis()
        self.settings = settings
        self.port = settings.port or pick_port(settings.host)
        self.serve_args = serve_args
        self.stopping = trio.Event()
        self._dir = Path(tempfile.mkdtemp(prefix="kdc-workers-"))
        self.children = [Child(i, self._dir / f"worker-{i}.port") for i in range(workers)]

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.children if c.proc is not None and c.proc.returncode is None]

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_signals)
            for child in self.children:
                nursery.start_soon(self._keep_running, child)
            with trio.fail_after(START_TIMEOUT_S):
                for child in self.children:
                    await child.listening.wait()
            task_status.started(self.port)

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for sig in signals:
                log.info("signal %s: draining %d workers", signal.Signals(sig).name, len(self.children))
                self.stopping.set()
                for pid in self.pids():
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                return

    async def _keep_running(self, child: Child) -> None:
        backoff = RESTART_BACKOFF_MIN_S
        env = {**os.environ, "KDC_PORT": str(self.port), "KDC_REUSE_PORT": "1", "KDC_WORKER_INDEX": str(child.index)}
        while not self.stopping.is_set():
            child.port_file.unlink(missing_ok=True)
            cmd = child_command(["serve", *self.serve_args, "--port-file", str(child.port_file)])
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                child.proc = await trio.lowlevel.open_process(cmd, env=env)
                log.info("worker %d started (pid %d)", child.index, child.proc.pid)
                nursery.start_soon(self._wait_listening, child, nursery.cancel_scope)
                nursery.start_soon(self._kill_after_grace, child)
                try:
                    await child.proc.wait()
                finally:  # the supervisor itself is going (cancelled): no orphans
                    if child.proc.returncode is None:
                        child.proc.kill()
                nursery.cancel_scope.cancel()
            if self.stopping.is_set():
                log.info("worker %d stopped (exit %s)", child.index, child.proc.returncode)
                return
            lived = trio.current_time() - started
            backoff = RESTART_BACKOFF_MIN_S if lived >= YOUNG_S else min(backoff * 2, RESTART_BACKOFF_MAX_S)
            child.restarts += 1
            log.error("worker %d (pid %d) exited with %s after %.1fs; restarting in %.1fs", child.index,
                      child.proc.pid, child.proc.returncode, lived, backoff)
            with trio.move_on_after(backoff):
                await self.stopping.wait()

    async def _wait_listening(self, child: Child, scope: trio.CancelScope) -> None:
        while not (child.port_file.exists() and child.port_file.read_text()):
            await trio.sleep(0.05)
        child.listening.set()

    async def _kill_after_grace(self, child: Child) -> None:
        await self.stopping.wait()
        await trio.sleep(self.settings.shutdown_grace_s + STOP_MARGIN_S)
        if child.proc is not None and child.proc.returncode is None:
            log.error("worker %d did not stop in time: SIGKILL", child.index)
            child.proc.kill()


async def supervise(settings: Settings, workers: int, serve_args: list[str], port_file: str | None) -> None:
    sup = Supervisor(settings, workers, serve_args)
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(sup.run)
            print(f"kdc-trio listening on http://{settings.host}:{port}  ({workers} workers, bus: redis)",
                  flush=True)
            if port_file:
                Path(port_file).write_text(str(port))
    finally:
        shutil.rmtree(sup._dir, ignore_errors=True)  # the workers' port files
    log.info("stopped")
