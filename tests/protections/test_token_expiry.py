"""Tokens that expire, expire — on live connections, with real clients (httpx-sse, python-socketio).

A connection opened with a 5-second token (leeway 0, notice 3 s) is told `auth.expiring`, may
refresh in-band and keep streaming past the old deadline; without a refresh it gets
`auth.expired` and is closed with `token_expired`; reconnecting with a fresh token and its last
event id loses nothing. Every token source (query, header, cookie, Socket.IO auth) is held to it.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import trio

from kdc_trio.auth.mint import mint_token
from tests.support.gateway import running_gateway, test_settings
from tests.support.node import node_client_dir
from tests.support.sio_client import run_sio
from tests.support.sse_client import open_stream

SHORT_S = 5


def settings():
    return test_settings(jwt_leeway_s=0.0, auth_expiring_notice_s=3.0)


def tok(sub: str, ttl_s: float = 600) -> str:
    return mint_token(settings(), subject=sub, ttl_s=ttl_s)


def services(st, type_: str) -> list:
    return [e.data for e in st.of("chat_service") if e.data["type"] == type_]


def turn_done(st, n: int = 1) -> bool:
    return len(st.of("chat_complete")) >= n


@pytest.mark.parametrize("source", ["query", "header", "cookie"])
async def test_sse_stream_told_then_refreshed_in_band_keeps_streaming(source):
    short = tok("alice", SHORT_S)
    url = "/sse/stream?stream_id=tab1"
    headers = {}
    if source == "query":
        url += f"&bearer_token={short}"
    elif source == "header":
        headers["authorization"] = f"Bearer {short}"
    else:
        headers["cookie"] = f"__Secure-LATC={short}"
    async with running_gateway(settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=20) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, url, headers=headers)
            assert st.status == 200 and st.ready["token_deadline"] <= time.time() + SHORT_S
            await st.wait_for(lambda s: services(s, "auth.expiring"), timeout=SHORT_S + 2)
            expiring = services(st, "auth.expiring")[0]["data"]
            assert expiring["deadline"] == st.ready["token_deadline"] and expiring["exp"] <= time.time() + 4
            # a different user's token is refused; the right user's moves the deadline
            other = await client.post("/sse/auth.refresh?stream_id=tab1", headers={"authorization": f"Bearer {tok('mallory')}"})
            assert other.status_code == 403 and other.json()["error"] == "subject_mismatch"
            unknown = await client.post("/sse/auth.refresh?stream_id=nope", json={"bearer_token": tok("alice")})
            assert unknown.status_code == 404
            r = await client.post("/sse/auth.refresh?stream_id=tab1", json={"bearer_token": tok("alice")})
            assert r.status_code == 200 and r.json()["ok"] is True and r.json()["exp"] > time.time() + 500
            await trio.sleep(max(0.0, st.ready["token_deadline"] - time.time()) + 1.0)  # past the old deadline
            post = await client.post("/sse/chat?stream_id=tab1", json={"message": "still here"},
                                     headers={"authorization": f"Bearer {tok('alice')}"})
            assert post.status_code == 202
            await st.wait_for(turn_done, timeout=10)
            assert not st.ended and not services(st, "auth.expired")
            nursery.cancel_scope.cancel()


async def test_sse_stream_without_refresh_is_closed_then_resumes_with_nothing_lost():
    async with running_gateway(settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=20) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, f"/sse/stream?stream_id=t2&bearer_token={tok('bob', SHORT_S)}")
            sid = st.ready["session_id"]
            post = await client.post(f"/sse/chat?stream_id=t2&user_session_id={sid}", json={"message": "one"},
                                     headers={"authorization": f"Bearer {tok('bob')}"})
            assert post.status_code == 202
            await st.wait_for(turn_done, timeout=10)
            await st.wait_for(lambda s: s.ended, timeout=SHORT_S + 3)
            assert services(st, "auth.expiring") and services(st, "auth.expired")
            assert services(st, "auth.expired")[0]["data"]["reason"] == "token_expired"
            named = [e for e in st.events if e.event != "message"]  # the `: closing …` comment parses as one
            assert named[-1].event == "chat_service", "the closing notice is the last event"
            last_id = [e.id for e in st.events if e.id][-1]
            # while disconnected, a turn runs; the re-authenticated stream gets it from the log
            post = await client.post(f"/sse/chat?stream_id=t3&user_session_id={sid}", json={"message": "two"},
                                     headers={"authorization": f"Bearer {tok('bob')}"})
            assert post.status_code == 202
            await trio.sleep(0.5)
            again = await open_stream(nursery, client, f"/sse/stream?stream_id=t3&user_session_id={sid}",
                                      headers={"authorization": f"Bearer {tok('bob')}", "last-event-id": last_id})
            assert again.status == 200 and again.ready["session_id"] == sid
            await again.wait_for(turn_done, timeout=10)
            ids = [int(e.id) for e in again.events if e.id]
            assert ids and ids[0] == int(last_id) + 1 and ids == sorted(ids), "resumed right after the last event"
            nursery.cancel_scope.cancel()


def sio_services(res, type_: str) -> list:
    return [d for d in res.of("chat_service") if d["type"] == type_]


async def wait_disconnected(res, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not res.disconnected:
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_socketio_refresh_in_band_keeps_the_socket(transport):
    alive = {}

    async def scenario(sio, res):
        await res.wait_for(lambda r: sio_services(r, "auth.expiring"), timeout=SHORT_S + 2)
        res.acks.append(await sio.call("auth.refresh", {"bearer_token": tok("mallory")}, timeout=5))
        res.acks.append(await sio.call("auth.refresh", {"bearer_token": tok("carol")}, timeout=5))
        await asyncio.sleep(max(0.0, sio_services(res, "auth.expiring")[0]["data"]["deadline"] - time.time()) + 1.0)
        res.acks.append(await sio.call("chat_message", {"message": "after the old deadline"}, timeout=5))
        await res.wait_for(lambda r: r.of("chat_complete"), timeout=10)
        alive["connected"] = sio.connected and not res.disconnected  # before run_sio's own disconnect

    async with running_gateway(settings()) as gw:
        res = await run_sio(gw.base_url, scenario, transports=[transport], auth={"bearer_token": tok("carol", SHORT_S)})
    assert res.connected, res.connect_error
    mismatch, ok, turn = res.acks
    assert mismatch["ok"] is False and mismatch["error"] == "subject_mismatch" and mismatch["status"] == 403
    assert ok["ok"] is True and ok["exp"] > time.time() + 500
    assert turn["ok"] is True and turn["status"] == "processing_started"
    assert not sio_services(res, "auth.expired") and alive["connected"]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_socketio_without_refresh_is_disconnected_token_expired_and_resumes(transport):
    box = {}

    async def scenario(sio, res):
        res.acks.append(await sio.call("chat_message", {"message": "before"}, timeout=5))
        await res.wait_for(lambda r: r.of("chat_complete"), timeout=10)
        await wait_disconnected(res, SHORT_S + 3)

    async with running_gateway(settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=20) as client:
        res = await run_sio(gw.base_url, scenario, transports=[transport], auth={"bearer_token": tok("dan", SHORT_S)})
        assert res.disconnected and sio_services(res, "auth.expiring")
        expired = sio_services(res, "auth.expired")
        assert expired and expired[0]["data"]["reason"] == "token_expired"
        sid = res.of("session_info")[0]["session_id"]
        last = max(d["seq"] for e, d in res.events if isinstance(d, dict) and d.get("seq"))
        # while disconnected, the session gets an event for all its connections (a conv_status
        # asked for without a stream); the re-authenticated socket gets it from the log
        conv = res.of("chat_complete")[0]["conversation"]["conversation_id"]
        r = await client.post(f"/sse/conv_status.get?user_session_id={sid}", json={"conversation_id": conv},
                              headers={"authorization": f"Bearer {tok('dan')}"})
        assert r.status_code == 200

        async def resume(sio, res):
            await res.wait_for(lambda r: r.of("conv_status"), timeout=10)

        again = await run_sio(gw.base_url, resume, transports=[transport],
                              auth={"bearer_token": tok("dan"), "user_session_id": sid, "last_event_id": last})
        box["again"] = again
    seqs = [d["seq"] for e, d in again.events if isinstance(d, dict) and d.get("seq")]
    assert seqs and seqs[0] == last + 1, "resumed right after the last event"


@pytest.mark.parametrize("transports", ["websocket", "polling"])
async def test_node_socketio_client_refreshes_or_is_disconnected(transports):
    """The official Node socket.io-client: refresh in-band keeps the socket past the old deadline;
    without a refresh the server disconnects it after `auth.expired`."""
    cwd = node_client_dir()

    async def run(fresh: str) -> dict:
        with trio.fail_after(40):
            proc = await trio.run_process(["node", "token_refresh.mjs", gw.base_url, transports,
                                           tok("erin", SHORT_S), fresh],
                                          cwd=cwd, capture_stdout=True, capture_stderr=True, check=False)
        assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
        return json.loads(proc.stdout)

    async with running_gateway(settings()) as gw:
        kept = await run(tok("erin"))
        dropped = await run("-")
    assert kept["connected"] and kept["refresh_ack"]["ok"] is True and kept["turn_ack"]["ok"] is True
    assert kept["completed"] and kept["alive_at_complete"] is True
    assert [s["type"] for s in kept["services"]] == ["auth.expiring"]
    types = [s["type"] for s in dropped["services"]]
    assert types == ["auth.expiring", "auth.expired"] and dropped["services"][1]["data"]["reason"] == "token_expired"
    assert dropped["disconnect"] == "io server disconnect"


async def test_sse_refresh_refuses_bad_requests_precisely():
    async with running_gateway(settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=20) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, f"/sse/stream?stream_id=r1&bearer_token={tok('fay')}")
            anon = await open_stream(nursery, client, "/sse/stream?stream_id=r2")
            assert st.status == anon.status == 200 and "token_deadline" not in anon.ready
            url = "/sse/auth.refresh?stream_id=r1"
            cases = {
                "not json": (await client.post(url, content=b"{nope"), 400, "bad_request"),
                "not an object": (await client.post(url, json=["x"]), 400, "bad_request"),
                "too large": (await client.post(url, content=b" " * (65 * 1024)), 413, None),
                "no token": (await client.post(url), 401, "authentication_required"),
                "bad token": (await client.post(url, json={"bearer_token": "x.y.z"}), 401, None),
                "expired token": (await client.post(url, json={"bearer_token": mint_token(
                    settings(), subject="fay", extra={"exp": int(time.time()) - 60, "iat": int(time.time()) - 120,
                                                      "nbf": int(time.time()) - 120})}), 401, None),
                "other session": (await client.post(url + "&user_session_id=someone-else",
                                                    json={"bearer_token": tok("fay")}), 403, "session_mismatch"),
                "anonymous stream": (await client.post("/sse/auth.refresh?stream_id=r2",
                                                       json={"bearer_token": tok("fay")}), 403, "not_authenticated"),
            }
            for name, (r, status, error) in cases.items():
                assert r.status_code == status, (name, r.status_code, r.text)
                if error:
                    assert r.json()["error"] == error, (name, r.json())
            ok = await client.post(url, headers={"cookie": f"__Secure-LATC={tok('fay')}"})
            assert ok.status_code == 200 and ok.json()["ok"] is True, "a cookie is a token source too"
            nursery.cancel_scope.cancel()


async def test_closed_streams_leave_no_token_alarms_behind():
    """Connection churn with hour-long tokens: each closed stream's token alarm (an hour away)
    leaves the process timer's heap, not when its hour is up (util/timers.py: rebuilt once its
    dead entries are most of it). Real streams through the gateway, opened and dropped."""
    from kdc_trio.util.timers import COMPACT_AT, Timers

    token = tok("churner", 3600)
    async with running_gateway(settings()) as gw:
        port = int(gw.base_url.rsplit(":", 1)[1])
        timers = Timers.shared()
        for i in range(3 * COMPACT_AT):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(f"GET /sse/stream?stream_id=churn{i} HTTP/1.1\r\nHost: x\r\n"
                                  f"Authorization: Bearer {token}\r\n\r\n".encode())
            got = b""
            with trio.fail_after(10):
                while b"event: ready" not in got:
                    got += await stream.receive_some(65536)
            assert b"token_deadline" in got, "the stream has a token deadline (its alarm is set)"
            await stream.aclose()
        await trio.sleep(0.5)  # the gateway sees the last streams go
        # each live stream holds at most its heartbeat and its token alarm; the rest were rebuilt away
        assert timers.compactions > 0
        assert len(timers._heap) <= COMPACT_AT + 2 * 10, len(timers._heap)
