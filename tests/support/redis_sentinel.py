"""A real Redis Sentinel setup on free ports, owned by one test: a master, a replica and three
Sentinels (quorum 2) in temp dirs; the master can be SIGKILLed and the failover waited for.

The Sentinels are `redis-sentinel` when it is on the PATH, else `redis-server --sentinel` (the
same program). Without redis-server a test skips — or fails under KDC_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import redis

from tests.support.redis_server import RedisServer, free_port, redis_server_binary

MASTER_NAME = "mymaster"
QUORUM = 2
# The master is subjectively down after this long without a valid reply: the failover starts
# ~1 s after a kill, and the whole failover takes ~2-4 s on a loaded box.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def sentinel_command(conf: Path) -> list[str]:
    path = shutil.which("redis-sentinel")
    return [path, str(conf)] if path else [redis_server_binary(), str(conf), "--sentinel"]


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2,
                       decode_responses=True)


class Sentinel:
    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kdc-sentinel-"))
        self.conf = self.dir / "sentinel.conf"  # the Sentinel rewrites it: it must be its own
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        self.proc: subprocess.Popen | None = subprocess.Popen(
            sentinel_command(self.conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self) -> redis.Redis:
        return _client(self.port)

    def master_info(self) -> dict:
        raw = self.client().execute_command("SENTINEL", "MASTER", MASTER_NAME)
        return raw if isinstance(raw, dict) else dict(zip(raw[::2], raw[1::2]))

    def master_port(self) -> int:
        return int(self.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)[1])

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSetup:
    def __init__(self, sentinels: int = 3) -> None:
        self.master = RedisServer()
        self.replica = RedisServer()
        self.sentinels: list[Sentinel] = []
        try:
            self.master.start()  # first: its port is known once it runs (RedisServer.start)
            self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
            self.replica.start()
            for _ in range(sentinels):
                self.sentinels.append(Sentinel(self.master.port))
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def servers(self) -> list[RedisServer]:
        return [self.master, self.replica]

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers() if s.port == port)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """The replica is in sync and every Sentinel knows the master, the replica and the others."""
        deadline = time.monotonic() + timeout
        want = len(self.sentinels) - 1
        while time.monotonic() < deadline:
            try:
                info = _client(self.replica.port).info("replication")
                views = [s.master_info() for s in self.sentinels]
                if info.get("master_link_status") == "up" and all(
                        int(v["num-slaves"]) == 1 and int(v["num-other-sentinels"]) == want for v in views):
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("the Sentinel setup did not become ready")

    def master_port(self) -> int:
        """The master's port as a live Sentinel names it."""
        for s in self.sentinels:
            if s.proc is not None:
                try:
                    return s.master_port()
                except (redis.RedisError, OSError):
                    continue
        raise RuntimeError("no Sentinel answered")

    def kill_master(self) -> RedisServer:
        """SIGKILL the server that is master now; returns it (stopped: `start()` brings it back)."""
        victim = self.server_on(self.master_port())
        victim.kill()
        return victim

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Until every live Sentinel names a master other than `old_port` and it answers as master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ports = {s.master_port() for s in self.sentinels if s.proc is not None}
                if len(ports) == 1 and old_port not in ports:
                    (port,) = ports
                    if _client(port).execute_command("ROLE")[0] == "master":
                        return port
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no failover away from port {old_port} within {timeout}s")

    def close(self) -> None:
        for s in self.sentinels:
            s.close()
        for r in self.servers():
            r.kill()
            shutil.rmtree(r.dir, ignore_errors=True)


@contextmanager
def redis_sentinel(sentinels: int = 3) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(sentinels)
    try:
        setup.wait_ready()
        yield setup
    finally:
        setup.close()
