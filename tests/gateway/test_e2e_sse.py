"""End to end with a real client (httpx + httpx-sse) against a server started in the test."""

from __future__ import annotations

import hashlib
import os

import httpx
import trio

from tests.support.gateway import running_gateway, test_settings
from tests.support.sse_client import open_stream

MARKERS = {"thinking", "answer", "canvas", "timeline_text"}


def check_turn(st, *, text: str, files: dict[str, bytes]) -> None:
    """The demo bundle's whole sequence, in order, with its markers and attachment digests."""
    names = [e.event for e in st.events if e.event not in ("ready", "conv_status")]
    assert names[0] == "chat_start" and names[-1] == "chat_complete"
    assert set(names) == {"chat_start", "chat_step", "chat_delta", "chat_complete"}
    ids = [int(e.id) for e in st.events if e.event != "ready"]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "SSE ids are the increasing session sequence"
    deltas = [e.data for e in st.of("chat_delta")]
    assert {d["delta"]["marker"] for d in deltas} == MARKERS
    answer = "".join(d["delta"]["text"] for d in deltas if d["delta"]["marker"] == "answer")
    assert answer == f"You said: {text}"
    for d in deltas:
        assert d["text"] == d["delta"]["text"] and d["idx"] == d["delta"]["index"]
    steps = {e.data["event"]["step"]: e.data for e in st.of("chat_step")}
    got = {a["filename"]: a for a in steps["attachments_received"]["data"]["attachments"]}
    assert set(got) == set(files)
    for name, blob in files.items():
        assert got[name]["sha256"] == hashlib.sha256(blob).hexdigest()
        assert got[name]["size"] == len(blob)
    assert any(e.data["type"] == "chat.followups" for e in st.of("chat_step"))
    states = [e.data["data"]["state"] for e in st.of("conv_status")]
    assert states[0] == "in_progress" and states[-1] == "idle"


async def test_json_message_streams_the_whole_turn():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=tab1")
            assert st.ready["stream_id"] == "tab1" and st.ready["user_type"] == "anonymous"
            sid = st.ready["session_id"]
            r = await client.post(f"/sse/chat?stream_id=tab1&user_session_id={sid}",
                                  json={"message": {"text": "hello kdc trio"}})
            assert r.status_code == 202, r.text
            body = r.json()
            assert body["status"] == "processing_started" and body["session_id"] == sid
            assert {"task_id", "conversation_id", "turn_id", "user_type"} <= set(body)
            await st.wait_for(lambda s: s.of("chat_complete") and len(s.of("conv_status")) >= 2)
            check_turn(st, text="hello kdc trio", files={})
            assert all(e.data["conversation"]["turn_id"] == body["turn_id"] for e in st.of("chat_delta"))
            nursery.cancel_scope.cancel()


async def test_multipart_with_two_binary_files():
    small, big = os.urandom(1000), os.urandom(1024 * 1024 + 4321)
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
            sid = st.ready["session_id"]
            r = await client.post(
                f"/sse/chat?stream_id=s&user_session_id={sid}",
                data={"message": '{"text": "two files"}',
                      "attachment_meta": '[{"filename": "a.bin", "mime": "application/x-a"}, {"filename": "b.bin"}]'},
                files=[("files", ("a.bin", small, "application/octet-stream")),
                       ("files", ("b.bin", big, "image/png"))])
            assert r.status_code == 202, r.text
            await st.wait_for(lambda s: s.of("chat_complete") and len(s.of("conv_status")) >= 2)
            check_turn(st, text="two files", files={"a.bin": small, "b.bin": big})
            atts = {a["filename"]: a for a in
                    next(e for e in st.of("chat_step") if e.data["event"]["step"] == "attachments_received")
                    .data["data"]["attachments"]}
            assert atts["a.bin"]["mime"] == "application/x-a" and atts["b.bin"]["mime"] == "image/png"
            nursery.cancel_scope.cancel()


async def test_events_reach_every_connection_of_the_session_and_replay_after_reconnect():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            a = await open_stream(nursery, client, "/sse/stream?stream_id=a")
            sid = a.ready["session_id"]
            b = await open_stream(nursery, client, f"/sse/stream?stream_id=b&user_session_id={sid}")
            r = await client.post(f"/sse/chat?stream_id=a&user_session_id={sid}", json={"text": "hi"})
            assert r.status_code == 202
            await a.wait_event("chat_complete")
            # conv_status goes to the whole session; turn events only to the sending stream (KDCube's default)
            await b.wait_event("conv_status", 2)
            assert not b.of("chat_delta")
            # a reconnect of `a` with Last-Event-ID gets exactly what came after it
            cut = [e for e in a.events if e.event != "ready"][3]
            a2 = await open_stream(nursery, client, f"/sse/stream?stream_id=a&user_session_id={sid}",
                                   headers={"Last-Event-ID": cut.id})
            want = [int(e.id) for e in a.events if e.event != "ready" and int(e.id) > int(cut.id)]
            await a2.wait_for(lambda s: len([e for e in s.events if e.event != "ready"]) >= len(want))
            assert [int(e.id) for e in a2.events if e.event != "ready"] == want
            nursery.cancel_scope.cancel()


async def test_refusals_are_told_on_the_stream_and_as_status():
    settings = test_settings(max_message_chars=10)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
            sid = st.ready["session_id"]
            r = await client.post(f"/sse/chat?stream_id=s&user_session_id={sid}", json={"text": "x" * 11})
            assert r.status_code == 413 and "CHAT_MAX_MESSAGE_CHARS" in r.text
            errs = await st.wait_event("chat_error")
            assert errs[0].data["data"]["code"] == r.json()["error"] and "limit is 10" in errs[0].data["data"]["error"]
            r = await client.post(f"/sse/chat?user_session_id={sid}", json={"text": "hi"})
            assert r.status_code == 400 and "stream_id" in r.json()["detail"]
            r = await client.post(f"/sse/chat?stream_id=s&user_session_id={sid}", content=b"{",
                                  headers={"content-type": "application/json"})
            assert r.status_code == 400
            nursery.cancel_scope.cancel()


class SlowBundle:
    def __init__(self) -> None:
        self.release = trio.Event()

    async def run(self, turn, comm) -> None:
        await comm.start(message=turn.message.text)
        await self.release.wait()
        await comm.complete(data={})


async def test_busy_conversation_gets_409_and_conv_status_on_request():
    """KDC_CONV_BUSY_POLICY=reject restores the 409 (the default makes it a continuation)."""
    bundle = SlowBundle()
    async with running_gateway(test_settings(conv_busy_policy="reject"), bundle=bundle) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
            sid = st.ready["session_id"]
            url = f"/sse/chat?stream_id=s&user_session_id={sid}"
            r1 = await client.post(url, json={"text": "one", "conversation_id": "c1"})
            assert r1.status_code == 202
            r2 = await client.post(url, json={"text": "two", "conversation_id": "c1"})
            assert r2.status_code == 409 and r2.json()["error"] == "conversation_busy"
            await st.wait_for(lambda s: any(e.data["data"].get("code") == "conversation_busy"
                                            for e in s.of("chat_error")))
            r = await client.post(f"/sse/conv_status.get?user_session_id={sid}",
                                  json={"conversation_id": "c1", "stream_id": "s"})
            assert r.status_code == 200 and r.json()["state"] == "in_progress"
            r = await client.get(f"/api/conv_status?conversation_id=c1&user_session_id={sid}")
            assert r.json()["current_turn_id"] == r1.json()["turn_id"]
            bundle.release.set()
            await st.wait_for(lambda s: s.of("conv_status") and s.of("conv_status")[-1].data["data"]["state"] == "idle")
            r3 = await client.post(url, json={"text": "three", "conversation_id": "c1"})
            assert r3.status_code == 202
            client.cookies.clear()  # without the sticky session cookie: a new anonymous session
            other = await client.get("/api/conv_status?conversation_id=c1")
            assert other.status_code == 404
            nursery.cancel_scope.cancel()


class BrokenBundle:
    async def run(self, turn, comm) -> None:
        await comm.start(message="x")
        raise ValueError("bundle bug")


async def test_a_failing_bundle_yields_chat_error_and_the_server_lives():
    async with running_gateway(bundle=BrokenBundle()) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
            sid = st.ready["session_id"]
            for _ in range(2):
                r = await client.post(f"/sse/chat?stream_id=s&user_session_id={sid}", json={"text": "go"})
                assert r.status_code == 202
            errs = await st.wait_event("chat_error", 2)
            assert "ValueError" in errs[0].data["data"]["error"]
            assert (await client.get("/health")).status_code == 200
            nursery.cancel_scope.cancel()


async def test_rest_endpoints():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        assert (await client.get("/health")).json()["status"] == "ok"
        r = await client.get("/ready")
        assert r.status_code == 200 and r.json()["ready"] is True
        m = (await client.get("/metrics")).text
        assert 'kdc_connections{transport="sse"} 0.0' in m and 'kdc_turns_total{outcome="accepted"} 0.0' in m
        s = (await client.get("/api/session")).json()
        assert s["user_type"] == "anonymous" and s["tenant"] == "home"


async def test_memory_store_caps_come_from_settings():
    """KDC_MEMORY_MAX_SESSIONS: past it the least recently stored anonymous session is gone (401)."""
    settings = test_settings(memory_max_sessions=2, memory_max_conversations=3)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        assert gw.store.max_sessions == 2 and gw.conv_store.max == 3
        first = (await client.get("/profile")).json()["session_id"]
        for _ in range(2):
            client.cookies.clear()
            await client.get("/profile")
        client.cookies.clear()
        r = await client.get(f"/api/session?user_session_id={first}")
        assert r.status_code == 401, r.text
