"""What one client can cost the Engine.IO server: packets per polling payload (capped, and
processed with yields so other tasks run), sessions per process and per address (503/429 with
the Engine.IO error body and Retry-After), and handshakes nobody follows (expired)."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from tests.support.gateway import running_gateway, test_settings

EIO = "/socket.io/?EIO=4"


async def handshake(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get(f"{EIO}&transport=polling")


def sid_of(r: httpx.Response) -> str:
    assert r.status_code == 200 and r.text.startswith("0"), (r.status_code, r.text)
    return json.loads(r.text[1:])["sid"]


async def test_a_payload_over_the_packet_cap_is_400_and_closes_the_session():
    async with running_gateway(test_settings(eio_max_packets=100)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        sid = sid_of(await handshake(client))
        flood = await client.post(f"{EIO}&transport=polling&sid={sid}", content=b"\x1e".join([b"6"] * 101))
        after = await client.get(f"{EIO}&transport=polling&sid={sid}")
        sid2 = sid_of(await handshake(client))
        fits = await client.post(f"{EIO}&transport=polling&sid={sid2}", content=b"\x1e".join([b"6"] * 100))
    assert flood.status_code == 400
    body = flood.json()
    assert body["code"] == 3 and body["message"] == "Bad request" and "101 packets" in body["detail"]
    assert after.status_code == 400 and after.json()["code"] == 1, "the session is gone"
    assert fits.status_code == 200


async def test_a_payload_of_many_packets_yields_to_other_tasks_while_it_is_processed():
    """50,000 noops in one POST: the loop keeps running other tasks between packets (before,
    the whole payload was processed in one task step: 34 MiB froze every client for 34 s)."""
    n = 50_000
    settings = test_settings(eio_max_packets=n, sio_max_payload=4 * n)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client:
        sid = sid_of(await handshake(client))
        ticks = 0
        done = trio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            r = await client.post(f"{EIO}&transport=polling&sid={sid}", content=b"\x1e".join([b"6"] * n))
            done.set()
        alive = await client.get("/health")
    assert r.status_code == 200 and r.text == "ok"
    assert ticks > n // 4, f"only {ticks} other task steps while {n} packets were processed"
    assert alive.status_code == 200


@pytest.mark.parametrize("caps,allowed,status,setting", [
    (dict(eio_max_sessions=3, eio_max_sessions_per_address=0), 3, 503, "KDC_EIO_MAX_SESSIONS"),
    (dict(eio_max_sessions=100, eio_max_sessions_per_address=2), 2, 429, "KDC_EIO_MAX_SESSIONS_PER_ADDRESS"),
], ids=["per-process-503", "per-address-429"])
async def test_sessions_past_a_cap_get_the_engineio_error_body_and_retry_after(caps, allowed, status, setting):
    async with running_gateway(test_settings(**caps)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        opened = [await handshake(client) for _ in range(allowed)]
        refused = await handshake(client)
        count, per_address = len(gw.engineio.sockets), dict(gw.engineio.per_address)
    assert all(r.status_code == 200 for r in opened)
    assert refused.status_code == status and int(refused.headers["retry-after"]) >= 1
    body = refused.json()
    assert set(body) == {"code", "message"} and isinstance(body["code"], int)
    assert f"({setting})" in body["message"]
    assert count == allowed and per_address == {"127.0.0.1": allowed}


async def test_handshakes_nobody_follows_expire_and_free_their_slots():
    settings = test_settings(eio_max_sessions=2, eio_max_sessions_per_address=0, eio_handshake_timeout_s=0.3)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        idle = sid_of(await handshake(client))
        used = sid_of(await handshake(client))
        assert (await handshake(client)).status_code == 503
        post = await client.post(f"{EIO}&transport=polling&sid={used}", content=b"6")
        with trio.fail_after(5):
            while idle in gw.engineio.sockets:
                await trio.sleep(0.02)
        await trio.sleep(0.4)  # past the timeout for `used` too: a session that was used stays
        gone = await client.get(f"{EIO}&transport=polling&sid={idle}")
        again = await handshake(client)
        left = set(gw.engineio.sockets)
        addresses = dict(gw.engineio.per_address)
    assert post.status_code == 200
    assert gone.status_code == 400 and gone.json()["code"] == 1
    assert again.status_code == 200
    assert used in left and idle not in left and addresses == {"127.0.0.1": 2}
