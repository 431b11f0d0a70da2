"""The servers bench/ measures: kdc-trio (over SSE and over Socket.IO) and the peers, each
started as its own process on a free port, optionally joined to a Redis the runner owns."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.live import START_TIMEOUT_S, LineReader, raise_file_limit, terminate

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"


@dataclass(frozen=True)
class Target:
    name: str
    proto: str   # "sse" or "sio": what the load generator speaks
    flavor: str  # "kdc" or "peer"

    def command(self, port: int, redis_url: str | None, workers: int = 1,
                no_worker: bool = False) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if self.flavor == "kdc":
            env.update({"KDC_PORT": str(port), "KDC_BUNDLE": "kdc_trio.bundles.bench:BenchBundle",
                        "KDC_LOG_LEVEL": "WARNING", "SSE_CLIENT_QUEUE": "200000",
                        "KDC_MAX_SSE_CONNECTIONS": "100000", "KDC_MAX_CONNECTIONS": "100000",
                        "KDC_EIO_MAX_SESSIONS": "100000", "KDC_EIO_MAX_SESSIONS_PER_ADDRESS": "100000",
                        "KDC_MAX_CONNECTIONS_PER_ADDRESS": "100000",  # every load generator is 127.0.0.1
                        "KDC_WORKER_CONCURRENCY": "2000", "KDC_TURN_QUEUE_SIZE": "100000",
                        # a load test floods turns from few addresses: the protections are not measured here
                        "KDC_RATE_LIMITS": "0", "KDC_ADMISSION": "0"})
            if redis_url:
                env["REDIS_URL"] = redis_url
            return [sys.executable, "-m", "kdc_trio", "serve", *(["--workers", str(workers)] if workers > 1 else []),
                    *(["--no-worker"] if no_worker else [])], env
        extra = [redis_url] if redis_url else []
        if self.name == "node-sio":
            return ["node", str(PEERS / "node_sio" / "server.js"), str(port), *extra], env
        script = {"py-sio": "py_sio.py", "sse-starlette": "sse_starlette_peer.py"}[self.name]
        return [sys.executable, str(PEERS / script), str(port), *extra], env


TARGETS = {t.name: t for t in [
    Target("kdc-sse", "sse", "kdc"), Target("kdc-sio", "sio", "kdc"),
    Target("node-sio", "sio", "peer"), Target("py-sio", "sio", "peer"),
    Target("sse-starlette", "sse", "peer"),
]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> None:
    """Until `proc` accepts connections on `port`; fail at `timeout` or when it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode} before it listened on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{proc.args[:4]} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def ensure_node_peer() -> None:
    if not (PEERS / "node_sio" / "node_modules" / "socket.io").is_dir():
        if not shutil.which("npm"):
            raise RuntimeError("npm is needed for the node-sio peer")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEERS / "node_sio",
                       check=True, timeout=300)


def wait_line(proc: subprocess.Popen, text: str, timeout: float = START_TIMEOUT_S) -> None:
    """Read `proc`'s stdout until a line holds `text`; fail at `timeout` or when it exits."""
    reader = LineReader(proc, f"{proc.args[:4]}")
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{proc.args[:4]} did not say {text!r} within {timeout:.0f} s")
        if text.encode() in reader.line(repr(text), left):
            return


class Running:
    """A started server: its base URL and its process (for CPU and RSS). A kdc-trio target with
    `separate_worker` (and a Redis) runs `serve --no-worker` and one `kdc-trio worker` that runs
    the bench bundle: the gateway's own CPU (`cpu_s`) is then apart from the producers'
    (`worker_cpu_s`)."""

    def __init__(self, target: Target, redis_url: str | None, workers: int = 1,
                 separate_worker: bool = False) -> None:
        if target.name == "node-sio":
            ensure_node_peer()
        raise_file_limit()  # soft to hard, inherited by the server (and the load generators) started after
        self.target = target
        self.redis_url = redis_url
        self.port = free_port()
        self.worker: subprocess.Popen | None = None
        self.worker_ps: psutil.Process | None = None
        self.proc: subprocess.Popen | None = None
        self.log = None
        separate = separate_worker and bool(redis_url) and target.flavor == "kdc"
        cmd, env = target.command(self.port, redis_url, workers, no_worker=separate)
        try:  # whatever fails on the way, nothing started here is left running
            if separate:  # the producers first: a turn queued before it listens would wait, not fail
                self.worker = subprocess.Popen([sys.executable, "-m", "kdc_trio", "worker"], env=env, cwd=ROOT,
                                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                wait_line(self.worker, "ready")
                self.worker_ps = psutil.Process(self.worker.pid)
            # stderr to a file: a pipe nobody reads would block a server that logs much (10,000 connections)
            self.log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log)
            wait_port(self.port, self.proc)
            if workers > 1 and target.flavor == "kdc":
                time.sleep(1.0)  # the port answers once the first worker listens: give the others their start
            self.ps = psutil.Process(self.proc.pid)
        except BaseException:
            self.stop()
            raise
        self.base = f"http://127.0.0.1:{self.port}"

    def _tree(self) -> list[psutil.Process]:
        """The server and its children (`serve --workers N`: the supervisor and its workers)."""
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return [self.ps]

    def worker_cpu_s(self) -> float:
        """CPU of the separate `kdc-trio worker` (0 without one)."""
        try:
            t = self.worker_ps.cpu_times() if self.worker_ps else None
        except psutil.NoSuchProcess:
            return 0.0
        return t.user + t.system if t else 0.0

    def redis_counters(self) -> tuple[float, int] | None:
        """The single Redis the server is joined to: its CPU seconds and the messages published on
        it (PUBLISH and SPUBLISH calls, scripts' included); None without one or under Redis
        Cluster (the run reports each master's)."""
        if not self.redis_url or not self.redis_url.startswith("redis://"):
            return None
        import redis
        client = redis.Redis.from_url(self.redis_url)
        try:
            cpu, stats = client.info("cpu"), client.info("commandstats")
        finally:
            client.close()
        published = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("publish", "spublish"))
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), published

    def cpu_s(self) -> float:
        """CPU of the server: the gateway (its supervisor and processes under `--workers N`);
        with a separate worker, without the producers."""
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def rss_mb(self) -> float:
        total = 0
        for p in self._tree():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20

    def log_tail(self, n: int = 2000) -> str:
        self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, self.log.tell() - n))
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a grace) the server, then whatever of its process tree is left
        (`serve --workers N`: a worker its supervisor did not take down), then the worker."""
        if self.proc is not None:
            try:
                children = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                children = []
            terminate(self.proc)
            for child in children:
                try:
                    child.kill()
                except psutil.Error:
                    pass
        if self.log is not None:
            self.log.close()
        if self.worker is not None:
            terminate(self.worker)
            self.worker.stdout.close()


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
                                      "--client-output-buffer-limit", "pubsub 512mb 256mb 60"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
