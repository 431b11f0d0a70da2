"""Proof of the protections with real clients: rate limits per user type over SSE (429 +
Retry-After, the `gateway.rate_limit` event on the stream) and Socket.IO (ack error, CONNECT_ERROR),
one budget shared by two gateway processes on one Redis, and admission that sheds anonymous
traffic first under a synthetic overload while a privileged client still gets in."""

from __future__ import annotations

from contextlib import ExitStack

import httpx
import trio

from kdc_trio.auth.mint import mint_token
from tests.support.bundles import ContinuationBundle
from tests.support.gateway import running_gateway, test_settings
from tests.support.processes import KdcProcess
from tests.support.redis_server import redis_server
from tests.support.sio_client import run_sio
from tests.support.sse_client import open_stream

BURST = 5  # KDCube's anonymous burst, the default


def token(sub: str, roles=()) -> str:
    return mint_token(test_settings(), subject=sub, roles=tuple(roles))


def limited(**kw):
    return test_settings(rate_limits=True, **kw)


async def _post_turns(client, stream: str, sid: str, n: int, headers=None) -> list[httpx.Response]:
    return [await client.post(f"/sse/chat?stream_id={stream}&user_session_id={sid}", headers=headers,
                              json={"message": {"text": f"turn {i}"}}) for i in range(n)]


async def test_sse_anonymous_past_its_burst_gets_429_and_the_event_a_registered_one_does_not():
    async with running_gateway(limited()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            anon = await open_stream(nursery, client, "/sse/stream?stream_id=anon")
            replies = await _post_turns(client, "anon", anon.ready["session_id"], BURST + 1)
            assert [r.status_code for r in replies] == [202] * BURST + [429], [r.text for r in replies]
            refused = replies[-1]
            retry = int(refused.headers["retry-after"])
            assert 1 <= retry <= 60
            assert refused.json()["error"] == "rate_limited"
            assert refused.json()["limit"] == "KDC_RATE_LIMIT_ANONYMOUS_BURST"
            [ev] = [e for e in await anon.wait_for_type("gateway.rate_limit")]
            assert ev.data["route"] == "chat_service"
            assert ev.data["data"]["retry_after"] == retry and ev.data["data"]["http_status"] == 429
            assert ev.data["data"]["error_type"] == "rate_limit" and ev.data["data"]["endpoint"] == "/sse/chat"

            auth = {"authorization": f"Bearer {token('reg-1')}"}
            reg = await open_stream(nursery, client, "/sse/stream?stream_id=reg", headers=auth)
            assert reg.ready["user_type"] == "registered"
            replies = await _post_turns(client, "reg", reg.ready["session_id"], BURST + 1, headers=auth)
            assert [r.status_code for r in replies] == [202] * (BURST + 1), [r.text for r in replies]
            nursery.cancel_scope.cancel()
    assert not [e for e in reg.of("chat_service") if e.data["type"].startswith("gateway.")]
    assert gw.guard.rate_limited == {"turn": 1, "connect": 0}


async def test_sse_a_new_session_does_not_escape_its_address_budget():
    settings = limited(rate_anonymous_burst=2, rate_address_factor=2)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        codes = []
        for n in range(3):  # a fresh session each time: 2 turns each, the address allows 4
            client.cookies.clear()  # no sticky session cookie: a new anonymous session
            r = await client.post(f"/sse/chat?stream_id=s{n}", json={"message": {"text": "hi"}})
            codes.append(r.status_code)
            sid = r.json().get("session_id")
            if sid:
                r = await client.post(f"/sse/chat?stream_id=s{n}&user_session_id={sid}",
                                      json={"message": {"text": "again"}})
                codes.append(r.status_code)
    assert codes == [202, 202, 202, 202, 429], codes


async def test_sse_new_streams_are_rate_limited_with_429():
    settings = limited(rate_anonymous_burst=1, rate_connect_factor=2)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            first = await open_stream(nursery, client, "/sse/stream?stream_id=c0")
            sid = first.ready["session_id"]
            second = await open_stream(nursery, client, f"/sse/stream?stream_id=c1&user_session_id={sid}")
            third = await open_stream(nursery, client, f"/sse/stream?stream_id=c2&user_session_id={sid}")
            assert second.status == 200
            assert third.status == 429 and third.error_body["error"] == "rate_limited"
            nursery.cancel_scope.cancel()


async def test_socketio_anonymous_past_its_burst_gets_an_ack_error_and_the_event():
    async def scenario(sio, res):
        await res.wait_for(lambda r: r.of("session_info"))
        for i in range(BURST + 1):
            res.acks.append(await sio.call("chat_message", {"message": f"turn {i}"}, timeout=10))
        await res.wait_for(lambda r: any(d["type"] == "gateway.rate_limit" for d in r.of("chat_service")))

    async with running_gateway(limited()) as gw:
        anon = await run_sio(gw.base_url, scenario, transports=["websocket"])
        reg = await run_sio(gw.base_url, scenario_registered, auth={"bearer_token": token("reg-2")},
                            transports=["websocket"])
    assert [a["ok"] for a in anon.acks] == [True] * BURST + [False], anon.acks
    refused = anon.acks[-1]
    assert refused["status"] == 429 and refused["error"] == "rate_limited" and 1 <= refused["retry_after"] <= 60
    assert refused["error_type"] == "rate_limit", "KDCube's clients read error_type"
    [ev] = [d for d in anon.of("chat_service") if d["type"] == "gateway.rate_limit"]
    assert ev["data"]["retry_after"] == refused["retry_after"]
    assert reg.of("session_info")[0]["user_type"] == "registered"
    assert [a["ok"] for a in reg.acks] == [True] * (BURST + 1), reg.acks


async def scenario_registered(sio, res):
    await res.wait_for(lambda r: r.of("session_info"))
    for i in range(BURST + 1):
        res.acks.append(await sio.call("chat_message", {"message": f"turn {i}"}, timeout=10))


async def test_socketio_connects_past_the_limit_get_connect_error_with_retry_after():
    async def nothing(sio, res):
        await res.wait_for(lambda r: r.of("session_info"))

    settings = limited(rate_anonymous_burst=1, rate_connect_factor=1)
    async with running_gateway(settings) as gw:
        first = await run_sio(gw.base_url, nothing, transports=["websocket"])
        sid = first.of("session_info")[0]["session_id"]
        second = await run_sio(gw.base_url, nothing, auth={"user_session_id": sid}, transports=["websocket"])
    assert first.connected and not second.connected
    assert second.connect_error["message"] == "rate_limited", second.connect_error
    assert second.connect_error["data"]["status"] == 429 and second.connect_error["data"]["retry_after"] >= 1


async def test_two_gateways_on_one_redis_share_one_budget():
    with redis_server() as srv, ExitStack() as stack:
        env = {"REDIS_URL": srv.url, "KDC_RATE_LIMITS": "1", "KDC_RATE_LIMIT_ANONYMOUS_BURST": "4",
               "KDC_BUNDLE": "tests.support.bundles:ContinuationBundle"}
        gws = []
        for _ in range(2):
            p = KdcProcess("serve", env)
            stack.callback(p.stop)
            gws.append(p.wait_ready())
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(f"{gws[0].base_url}/sse/chat?stream_id=x", json={"message": {"text": "0"}})
            assert r.status_code == 202, r.text
            sid = r.json()["session_id"]
            codes = [r.status_code]
            for i in range(1, 6):
                r = await client.post(f"{gws[i % 2].base_url}/sse/chat?stream_id=x&user_session_id={sid}",
                                      json={"message": {"text": str(i)}})
                codes.append(r.status_code)
    assert codes == [202, 202, 202, 202, 429, 429], codes
    assert "retry-after" in r.headers


async def test_admission_sheds_anonymous_first_and_lets_privileged_in():
    # One worker, a queue of 10: seven turns that hold it (one runs, six wait) are 60% of the queue.
    settings = test_settings(admission=True, turn_queue_size=10, worker_concurrency=1, admission_interval_ms=20)
    admin = {"authorization": f"Bearer {token('admin-1', roles=['admin'])}"}
    reg = {"authorization": f"Bearer {token('reg-3')}"}
    async with running_gateway(settings, bundle=ContinuationBundle()) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        for i in range(7):
            r = await client.post(f"/sse/chat?stream_id=p{i}", headers=admin, json={"message": {"text": "hold 30"}})
            assert r.status_code == 202, r.text
        with trio.fail_after(10):  # until the sampler has seen the queue
            while gw.admission.queue_depth < 6:
                await trio.sleep(0.02)
        anon = await client.post("/sse/chat?stream_id=a", json={"message": {"text": "hi"}})
        stream = await client.get("/sse/stream?stream_id=a2")
        registered = await client.post("/sse/chat?stream_id=r", headers=reg, json={"message": {"text": "hi"}})
        privileged = await client.post("/sse/chat?stream_id=p", headers=admin, json={"message": {"text": "hi"}})
        metrics = (await client.get("/metrics")).text
    assert anon.status_code == 503 and anon.json()["error"] == "overloaded", anon.text
    assert int(anon.headers["retry-after"]) >= 1
    assert anon.json()["limit"] == "KDC_ADMISSION_ANONYMOUS_THRESHOLD"
    assert stream.status_code == 503 and stream.json()["error"] == "overloaded"
    assert registered.status_code == 202, registered.text
    assert privileged.status_code == 202, privileged.text
    assert 'kdc_protection_refusals_total{action="turn",kind="overloaded"} 1.0' in metrics
    assert 'kdc_protection_refusals_total{action="connect",kind="overloaded"} 1.0' in metrics
    pressure = next(line for line in metrics.splitlines() if line.startswith("kdc_admission_pressure "))
    assert float(pressure.split()[1]) >= 0.6
