"""Connection caps from raw sockets: a burst of connections is counted at accept (the cap holds
exactly, however many arrive at once), a per-client-address cap, and a default process cap
derived from RLIMIT_NOFILE with headroom, so descriptors never run out before the cap."""

from __future__ import annotations

import resource
import socket

import h11
import trio

from kdc_trio.server import Server
from kdc_trio.server.serve import connection_caps
from tests.server.test_keepalive import echo_router
from tests.server.raw import get, read_response, serving
from tests.support.gateway import test_settings


def burst(port: int, n: int) -> list[socket.socket]:
    """`n` connections completed by the kernel before the server's accept loop runs again
    (blocking connects from this thread: the trio loop does not run in between)."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]


async def served(sock: socket.socket) -> bool:
    """True if the server answers a request on this connection, False if it closed it."""
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    try:
        await stream.send_all(get("/hello"))
        r = await read_response(stream, timeout=5)
        return r.status == 200
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, h11.RemoteProtocolError):
        return False
    finally:
        await stream.aclose()


async def hold_then_count(server: Server, socks: list[socket.socket]) -> int:
    with trio.fail_after(5):
        while server.connections + server.refused < len(socks):
            await trio.sleep(0.01)
    results = []
    async with trio.open_nursery() as nursery:
        for s in socks:
            async def one(s=s):
                results.append(await served(s))
            nursery.start_soon(one)
    return sum(results)


async def test_a_burst_of_connections_is_counted_at_accept():
    """Counted when its task ran, a burst passed the cap by the tasks not yet scheduled (one
    round in three or so here; 400 for 300 in the field): several rounds, each exactly the cap."""
    async with serving(echo_router(), max_connections=5, max_connections_per_address=100) as (server, port):
        rounds = []
        for _ in range(6):
            server.refused = 0
            socks = burst(port, 30)
            rounds.append((await hold_then_count(server, socks), server.refused))
            with trio.fail_after(5):
                while server.connections:
                    await trio.sleep(0.01)
    assert rounds == [(5, 25)] * 6


async def test_connections_per_client_address_are_capped():
    async with serving(echo_router(), max_connections=100, max_connections_per_address=3) as (server, port):
        socks = burst(port, 8)
        ok = await hold_then_count(server, socks)
        refused = server.refused
        with trio.fail_after(5):
            while server.per_address:
                await trio.sleep(0.01)
        again = await hold_then_count(server, burst(port, 2))
    assert ok == 3 and refused == 5
    assert again == 2, "slots of closed connections are free again (and their address entry gone)"


def test_the_default_cap_leaves_descriptors_for_everything_else():
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    server = Server(test_settings(), handler=None)  # type: ignore[arg-type]
    assert server.max_connections < soft or soft == resource.RLIM_INFINITY
    assert server.max_per_address == server.max_connections // 2
    cap, per_address, warning = connection_caps(test_settings(), nofile=20000)
    assert (cap, per_address, warning) == (18000, 9000, None)
    cap, _, warning = connection_caps(test_settings(max_connections=20000), nofile=20000)
    assert cap == 18000 and "clamped to 18000" in warning
    assert connection_caps(test_settings(max_connections=500), nofile=20000)[:2] == (500, 250)
    assert connection_caps(test_settings(), nofile=256)[0] == 224, "at least 32 kept"
    assert connection_caps(test_settings(), nofile=resource.RLIM_INFINITY)[0] == 65536
