"""A live `kdc-trio serve` process for the fuzzers and the soak: started on a free port with the
embedded defaults (memory bus, no Redis), watched from outside (RSS, open files, `/health`,
`/metrics`), stopped at the end. The file limit of this process (and so of the server it starts)
is raised to its hard limit: the soak holds thousands of sockets on both sides."""

from __future__ import annotations

import http.client
import os
import resource
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
# A loaded CI machine can take a while to import and bind; a healthy one takes about a second.
START_TIMEOUT_S = 120


def raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def terminate(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM (the server drains), then SIGKILL after `grace_s`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LineReader:
    """The lines a child process prints on its stdout pipe, each waited for with a deadline.

    `select` plus `os.read` on the pipe itself: a line already read is never missed (no buffered
    reader holds it behind `select`'s back) and a partial line never blocks. A child that is
    silent past the deadline raises `TimeoutError` naming what it did not report; one that
    exits first raises `RuntimeError` with its exit status."""

    def __init__(self, proc: subprocess.Popen, name: str) -> None:
        self.proc, self.name = proc, name
        self._fd = proc.stdout.fileno()
        self._buf = b""

    def line(self, what: str, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name} did not report {what} within {timeout:.0f} s "
                                   f"(still running: {self.proc.poll() is None})")
            readable, _, _ = select.select([self._fd], [], [], min(left, 1.0))
            if readable:
                chunk = os.read(self._fd, 1 << 16)
                if not chunk:
                    try:
                        rc = self.proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        rc = None
                    raise RuntimeError(f"{self.name} closed its output (exit {rc}) before it reported {what}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line


class LiveServer:
    """`python -m kdc_trio serve` with `env` over the defaults; `port` is bound by the server itself."""

    def __init__(self, env: dict[str, str] | None = None, *, log_path: Path | None = None) -> None:
        raise_file_limit()
        self._port_file = Path(tempfile.mkdtemp(prefix="kdc-live-")) / "port"
        # The fuzzers and the soak measure robustness and growth, not the protections: they send
        # more turns and connections from one address than an anonymous client may (env can turn them on).
        full = {**os.environ, "PYTHONPATH": str(ROOT), "KDC_PORT": "0", "KDC_LOG_LEVEL": "WARNING",
                "KDC_RATE_LIMITS": "0", "KDC_ADMISSION": "0"}
        full.pop("REDIS_URL", None)
        full.update(env or {})
        self.log_path = log_path or self._port_file.with_name("server.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "kdc_trio", "serve", "--port-file", str(self._port_file)],
                                     env=full, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (self._port_file.exists() and self._port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start listening within {START_TIMEOUT_S} s")
            time.sleep(0.05)
        self.port = int(self._port_file.read_text())
        self.host = "127.0.0.1"
        self.ps = psutil.Process(self.proc.pid)

    # ---- observation ---------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def open_files(self) -> int:
        return self.ps.num_fds()

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def health_ok(self, timeout: float = 5.0) -> bool:
        try:
            return self.get("/health", timeout)[0] == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        """`/metrics` (Prometheus text) as {'name{labels}': value}."""
        _, body = self.get("/metrics", 30.0)
        out = {}
        for line in body.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
        return out

    def sample(self) -> dict:
        return {"rss_mb": round(self.rss_mb(), 2), "open_files": self.open_files()}

    def log_tail(self, n: int = 3000) -> str:
        try:
            if not self._log.closed:
                self._log.flush()
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        terminate(self.proc)
        self._log.close()
        return self.proc.returncode


class HealthWatch:
    """A thread that asks `/health` every `interval` seconds while the load runs and records
    every failure (no answer within `timeout`, not 200, or the process gone)."""

    def __init__(self, server: LiveServer, interval: float = 1.0, timeout: float = 5.0) -> None:
        self.server, self.interval, self.timeout = server, interval, timeout
        self.checks = 0
        self.failures: list[str] = []
        self.worst_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "HealthWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            t0 = time.monotonic()
            if not self.server.alive():
                self.failures.append(f"process exited with {self.server.proc.returncode}")
                return
            ok = self.server.health_ok(self.timeout)
            took = time.monotonic() - t0
            self.worst_s = max(self.worst_s, took)
            self.checks += 1
            if not ok:
                self.failures.append(f"/health failed after {took:.1f}s at {time.strftime('%H:%M:%S')}")
