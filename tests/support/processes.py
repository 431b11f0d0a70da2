"""kdc-trio gateways and workers as real processes (`python3 -m kdc_trio …`) for multi-process tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from tests.support.gateway import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]


class KdcProcess:
    def __init__(self, role: str, env: dict[str, str], *args: str) -> None:
        self.role = role
        self.dir = Path(tempfile.mkdtemp(prefix=f"kdc-{role}-"))
        self.port_file = self.dir / "port"
        self.log_path = self.dir / "log"
        cmd = [sys.executable, "-m", "kdc_trio", role, *args]
        if role == "serve":
            cmd += ["--port-file", str(self.port_file)]
        full_env = {**os.environ, "KDC_PORT": "0", "KDC_HOST": "127.0.0.1", "KDC_JWT_SECRET": TEST_SECRET,
                    "KDC_LOG_LEVEL": "INFO", "KDC_SHUTDOWN_GRACE_S": "1", "PYTHONPATH": str(ROOT),
                    # protections off unless the test is about them (it passes its own values)
                    "KDC_RATE_LIMITS": "0", "KDC_ADMISSION": "0", **env}
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        self.port: int | None = None

    def wait_ready(self, timeout: float = 60.0) -> "KdcProcess":
        """Until it listens (`serve`) or says ready (`worker`): about a second on an idle box, the
        deadline is for a busy 2-core CI box (imports, the Redis connection)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.role} exited with {self.proc.returncode}:\n{self.output()}")
            if self.role == "serve" and self.port_file.exists() and self.port_file.read_text():
                self.port = int(self.port_file.read_text())
                return self
            if self.role == "worker" and "ready" in self.output():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.role} not ready after {timeout}s:\n{self.output()}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def spawn(stack: ExitStack, role: str, env: dict[str, str], *args: str) -> KdcProcess:
    """A `kdc-trio <role>` process, ready; stopped when `stack` closes."""
    p = KdcProcess(role, env, *args)
    stack.callback(p.stop)
    return p.wait_ready()
