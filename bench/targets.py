"""The servers bench/ measures: kdc-trio (over SSE and over Socket.IO) and the peers, each
started as its own process on a free port, optionally joined to a Redis the runner owns."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.live import terminate

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"


@dataclass(frozen=True)
class Target:
    name: str
    proto: str   # "sse" or "sio": what the load generator speaks
    flavor: str  # "kdc" or "peer"

    def command(self, port: int, redis_url: str | None, workers: int = 1) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if self.flavor == "kdc":
            env.update({"KDC_PORT": str(port), "KDC_BUNDLE": "kdc_trio.bundles.bench:BenchBundle",
                        "KDC_LOG_LEVEL": "WARNING", "SSE_CLIENT_QUEUE": "200000",
                        "KDC_MAX_SSE_CONNECTIONS": "100000", "KDC_MAX_CONNECTIONS": "100000",
                        "KDC_WORKER_CONCURRENCY": "2000", "KDC_TURN_QUEUE_SIZE": "100000",
                        # a load test floods turns from few addresses: the protections are not measured here
                        "KDC_RATE_LIMITS": "0", "KDC_ADMISSION": "0"})
            if redis_url:
                env["REDIS_URL"] = redis_url
            return [sys.executable, "-m", "kdc_trio", "serve", *(["--workers", str(workers)] if workers > 1 else [])], env
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


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}")


def ensure_node_peer() -> None:
    if not (PEERS / "node_sio" / "node_modules" / "socket.io").is_dir():
        if not shutil.which("npm"):
            raise RuntimeError("npm is needed for the node-sio peer")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEERS / "node_sio",
                       check=True, timeout=300)


class Running:
    """A started server: its base URL and its process (for CPU and RSS)."""

    def __init__(self, target: Target, redis_url: str | None, workers: int = 1) -> None:
        if target.name == "node-sio":
            ensure_node_peer()
        self.target = target
        self.port = free_port()
        cmd, env = target.command(self.port, redis_url, workers)
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port, self.proc)
        if workers > 1 and target.flavor == "kdc":
            time.sleep(1.0)  # the port answers once the first worker listens: give the others their start
        self.ps = psutil.Process(self.proc.pid)
        self.base = f"http://127.0.0.1:{self.port}"

    def _tree(self) -> list[psutil.Process]:
        """The server and its children (`serve --workers N`: the supervisor and its workers)."""
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return [self.ps]

    def cpu_s(self) -> float:
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

    def stop(self) -> None:
        terminate(self.proc)


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
