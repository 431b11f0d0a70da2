"""A real `redis-server` on a free port, owned by one test: started, killed, restarted.

Without redis-server on the PATH a test skips — or fails under KDC_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

import pytest

from tests.support.node import services_required


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        msg = "redis-server is not on the PATH"
        if services_required():
            pytest.fail(msg + " (KDC_REQUIRE_SERVICES=1)")
        pytest.skip(msg)
    return path


# Starts of a new server on fresh ports when one it was given was taken (see RedisServer.start).
PORT_ATTEMPTS = 5
# Extra arguments whose value is a port of the server's own (picked again with the main port).
PORT_FLAGS = {"--cluster-port"}


class RedisServer:
    def __init__(self, *extra_args: str) -> None:
        self.binary = redis_server_binary()
        self.port = free_port()
        self.extra = list(extra_args)
        self.dir = tempfile.mkdtemp(prefix="kdc-redis-")
        self.proc: subprocess.Popen | None = None
        self.started = False  # once: a restart keeps its ports

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same ports) and wait until it answers. `free_port` cannot
        reserve a port: between picking and binding, another process's connection may take it
        as its ephemeral port, and redis-server then exits at once. On a first start its ports
        are picked again then (up to PORT_ATTEMPTS times); a restart keeps its ports, as the
        clients that follow it expect."""
        for _ in range(1 if self.started else PORT_ATTEMPTS):
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", self.dir, *self.extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._answers():
                self.started = True
                return
            if self.proc.poll() is None:  # running and silent: not a port it lost; not left running
                self.kill()
                break
            self.proc = None  # exited at once: a port it needed was taken meanwhile
            if not self.started:
                self.port = free_port()
                self.extra = [str(free_port()) if flag in PORT_FLAGS else a
                              for flag, a in zip([None, *self.extra], self.extra)]
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _answers(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64):
                        return True
            except OSError:
                time.sleep(0.02)
        return False

    def extra_port(self, flag: str) -> int | None:
        """The port given with `flag` in the extra arguments (e.g. `--cluster-port`), as started."""
        return next((int(a) for f, a in zip(self.extra, self.extra[1:]) if f == flag), None)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


@contextmanager
def redis_server(*extra_args: str) -> Iterator[RedisServer]:
    server = RedisServer(*extra_args)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.dir, ignore_errors=True)


def messages(batch: dict) -> list[tuple]:
    """A pub/sub batch (kdc_trio.redis.pubsub.Batch: channel -> its data, in order) as
    (channel, data) pairs, channel by channel."""
    return [(channel, data) for channel, datas in batch.items() for data in datas]
