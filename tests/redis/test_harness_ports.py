"""The tests' Redis harness (tests/support/redis_server.py) survives a port taken between picking
and binding: `free_port` cannot reserve a port, and another process's connection may take it as
its ephemeral port before redis-server binds it (a fresh-clone CI run lost a cluster test so).
A first start picks its ports again; a restart keeps them."""

from __future__ import annotations

import socket

import pytest

from tests.support.redis_cluster import command
from tests.support.redis_server import RedisServer


def occupy(port: int) -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_a_taken_port_is_picked_again_on_a_first_start():
    server = RedisServer()
    taken = server.port
    with occupy(taken):
        server.start()
        try:
            assert server.port != taken and command(server.port, "PING") == b"PONG"
        finally:
            server.kill()


def test_a_taken_cluster_bus_port_is_picked_again_with_the_main_port():
    blocker = occupy(0)  # a port the kernel picks, held: the bus port redis-server is given
    bus = blocker.getsockname()[1]
    server = RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                         "--cluster-port", str(bus))
    with blocker:
        server.start()
        try:
            assert server.extra_port("--cluster-port") != bus
            assert command(server.port, "PING") == b"PONG"
        finally:
            server.kill()


def test_a_restart_keeps_its_port_and_says_so_when_it_is_taken():
    server = RedisServer()
    server.start()
    port = server.port
    server.kill()
    with occupy(port):
        with pytest.raises(RuntimeError, match=f"did not start on port {port}"):
            server.start()
    server.start()
    try:
        assert server.port == port and command(port, "PING") == b"PONG"
    finally:
        server.kill()
