"""A real Redis Cluster on free ports, owned by one test module: N masters, R replicas each.

Every node is a `RedisServer` (tests/support/redis_server.py) started with `--cluster-enabled
yes`, its own config file in its own temp dir, and an explicit cluster bus port (`--cluster-port`,
so no `port + 10000` collision). The cluster is assembled by hand, as `redis-cli --cluster
create` does it but deterministically: master i gets an equal slot range
(`CLUSTER ADDSLOTSRANGE`) and config epoch i + 1, every node MEETs node 0, replica j of master i
`CLUSTER REPLICATE`s it; then we wait until every node reports `cluster_state:ok` and the same
complete slot map. `kill_master(i)` SIGKILLs a master and waits until one of its replicas is
promoted and the survivors agree again (`cluster-node-timeout` decides how long that takes).

Use it as a context manager (`with redis_cluster(3) as c:`) from sync tests or a module-scoped
fixture; trio tests call the blocking waits through `trio.to_thread.run_sync`. Without
redis-server on the PATH a test skips — or fails under KDC_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import shutil
import socket
import time
from contextlib import contextmanager
from typing import Any, Iterator

import hiredis
import pytest

from tests.support.redis_server import RedisServer, free_port, redis_server_binary

SLOTS = 16384
# Default failure-detection timeout: small, so failover tests take seconds, not 15 s.
NODE_TIMEOUT_MS = 1000


def command(port: int, *args: Any, timeout: float = 5.0) -> Any:
    """One command on a fresh connection to 127.0.0.1:port (sync; for the harness and tests)."""
    reader = hiredis.Reader()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(hiredis.pack_command(tuple(args)))
        while (reply := reader.gets()) is False:
            data = s.recv(65536)
            if not data:
                raise ConnectionError(f"127.0.0.1:{port} closed the connection")
            reader.feed(data)
    if isinstance(reply, hiredis.ReplyError):
        raise RuntimeError(f"{args[0]} on :{port}: {reply}")
    return reply


def _info(port: int, section: str) -> dict[str, str]:
    raw = command(port, "CLUSTER", "INFO") if section == "cluster" else command(port, "INFO", section)
    return dict(line.split(":", 1) for line in raw.decode().splitlines() if ":" in line)


class Node:
    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.id = ""

    @property
    def bus_port(self) -> int:
        port = self.server.extra_port("--cluster-port")
        assert port is not None
        return port

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def alive(self) -> bool:
        return self.server.proc is not None

    def cmd(self, *args: Any) -> Any:
        return command(self.port, *args)


class RedisCluster:
    def __init__(self, masters: int = 3, replicas: int = 0, *, node_timeout_ms: int = NODE_TIMEOUT_MS) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master")
        redis_server_binary()  # skip or fail now, before any process starts
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[Node] = []
        for _ in range(masters * (1 + replicas)):
            bus = free_port()
            server = RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                 "--cluster-node-timeout", str(node_timeout_ms), "--cluster-port", str(bus),
                                 "--cluster-require-full-coverage", "yes",
                                 # replicas attach at once, and show in CLUSTER SLOTS/SHARDS
                                 # once their offset moved (the master PINGs them every period)
                                 "--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1")
            self.nodes.append(Node(server))
        # Node i < masters is master i; replica j of master i is nodes[masters + i * replicas + j].
        self.master_count = masters
        self.replica_count = replicas

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.server.start()
            node.id = node.cmd("CLUSTER", "MYID").decode()
        per = SLOTS // self.master_count
        for i in range(self.master_count):
            first, last = i * per, (SLOTS - 1 if i == self.master_count - 1 else (i + 1) * per - 1)
            node = self.nodes[i]
            node.cmd("CLUSTER", "ADDSLOTSRANGE", first, last)
            node.cmd("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        for node in self.nodes[1:]:
            node.cmd("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, self.nodes[0].bus_port)
        self._wait(lambda: all(self._known(n) == len(self.nodes) for n in self.nodes), timeout, "nodes to meet")
        for i in range(self.master_count):
            for replica in self.replicas_of(i):
                replica.cmd("CLUSTER", "REPLICATE", self.nodes[i].id)
        self.wait_ok(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.server.kill()
            shutil.rmtree(node.server.dir, ignore_errors=True)

    # ---- views -------------------------------------------------------------------------------
    @property
    def seed_url(self) -> str:
        """`redis+cluster://` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def url_of(self, node: Node) -> str:
        return f"redis://127.0.0.1:{node.port}/0"

    def replicas_of(self, master: int) -> list[Node]:
        start = self.master_count + master * self.replica_count
        return self.nodes[start:start + self.replica_count]

    def masters(self) -> list[Node]:
        """The live nodes that are masters owning slots now (after failovers too)."""
        out = []
        for node in self.nodes:
            if node.alive and _info(node.port, "replication").get("role") == "master" and self._owns_slots(node):
                out.append(node)
        return out

    def node_at(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def owner_port(self, slot: int) -> int:
        """The port of the master that owns `slot`, as a live node sees it."""
        live = next(n for n in self.nodes if n.alive)
        for entry in live.cmd("CLUSTER", "SLOTS"):
            if entry[0] <= slot <= entry[1]:
                return int(entry[2][1])
        raise LookupError(f"slot {slot} has no owner")

    def shard_subscriptions(self, channels: list[str]) -> dict[int, int]:
        """Per live master (by port): the subscriptions (connections × channels) it holds for `channels`
        (PUBSUB SHARDNUMSUB)."""
        from kdc_trio.redis.slots import key_slot

        out = {}
        for node in self.masters():
            mine = [c for c in channels if self.owner_port(key_slot(c)) == node.port]
            reply = node.cmd("PUBSUB", "SHARDNUMSUB", *mine) if mine else []
            out[node.port] = sum(reply[i] for i in range(1, len(reply), 2))
        return out

    def _owns_slots(self, node: Node) -> bool:
        return any(int(e[2][1]) == node.port for e in node.cmd("CLUSTER", "SLOTS"))

    def _known(self, node: Node) -> int:
        return len([l for l in node.cmd("CLUSTER", "NODES").decode().splitlines() if l.strip()])

    # ---- waits -------------------------------------------------------------------------------
    def _wait(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            # LookupError: mid-failover a live node can list the slot with no owner for a moment
            # (the dead master dropped, its replica not promoted yet): not ready, not a failure
            except (OSError, RuntimeError, LookupError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster: gave up waiting for {what} after {timeout}s")
            time.sleep(0.05)

    def _agreed(self) -> bool:
        maps = []
        for node in self.nodes:
            if not node.alive:
                continue
            if _info(node.port, "cluster").get("cluster_state") != "ok":
                return False
            slots = node.cmd("CLUSTER", "SLOTS")
            if sum(e[1] - e[0] + 1 for e in slots) != SLOTS:
                return False
            owners = sorted((e[0], e[1], int(e[2][1])) for e in slots)
            if any(not self.node_at(port).alive for _, _, port in owners):
                return False
            # every live replica is attached (shown under its master) before we call it ok
            replicas = sorted(int(r[1]) for e in slots for r in e[3:])
            maps.append((owners, replicas))
        want_replicas = sum(1 for n in self.nodes if n.alive) - self.master_count
        return bool(maps) and all(m == maps[0] for m in maps) and len(set(maps[0][1])) >= want_replicas

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node reports `cluster_state:ok` and the same complete slot map."""
        self._wait(self._agreed, timeout, "cluster_state:ok and one slot map on every node")

    def kill_master(self, port: int, timeout: float = 30.0) -> Node:
        """SIGKILL the master on `port`; wait until a replica took its slots; return that replica."""
        victim = self.node_at(port)
        owned = [e for e in victim.cmd("CLUSTER", "SLOTS") if int(e[2][1]) == port]
        if not owned:
            raise ValueError(f"127.0.0.1:{port} is not a master owning slots")
        slot = owned[0][0]
        candidates = {int(r[1]) for e in owned for r in e[3:]}
        if not candidates:
            raise ValueError(f"127.0.0.1:{port} has no replica to promote")
        victim.server.kill()  # a promoted replica takes its place: master_count stays
        self._wait(lambda: self.owner_port(slot) in candidates, timeout, f"a replica of :{port} to be promoted")
        survivors = [n for n in self.nodes if n.alive]
        self._wait(lambda: all(_info(n.port, "cluster").get("cluster_state") == "ok" for n in survivors),
                   timeout, "cluster_state:ok after failover")
        return self.node_at(self.owner_port(slot))


@contextmanager
def redis_cluster(masters: int = 3, replicas: int = 0, *, node_timeout_ms: int = NODE_TIMEOUT_MS,
                  timeout: float = 30.0) -> Iterator[RedisCluster]:
    cluster = RedisCluster(masters, replicas, node_timeout_ms=node_timeout_ms)
    try:
        cluster.start(timeout)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def cluster3() -> Iterator[RedisCluster]:
    """One 3-master cluster (no replicas) per test module; tests flush it (`FLUSHALL`) themselves."""
    with redis_cluster(3) as cluster:
        yield cluster
