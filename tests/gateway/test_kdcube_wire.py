"""KDCube's own front ends against the real server: `/profile`, the `external_events` form over
JSON, multipart and Socket.IO, `extra` on every delta, ISO `ready.timestamp`, foreign
Last-Event-IDs, Socket.IO acks with `ok`, refusals that carry the request's ids."""

from __future__ import annotations

import hashlib
import os
import re
import uuid

import httpx
import trio

from kdc_trio.auth.mint import mint_token
from tests.support.gateway import running_gateway, test_settings
from tests.support.sio_client import SioResult, run_sio
from tests.support.sse_client import open_stream

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


def tok(sub: str, roles=()) -> str:
    return mint_token(test_settings(), subject=sub, roles=tuple(roles))


def submission(text: str, files: list[tuple[str, bytes, str]] = (), **kw) -> dict:
    """What KDCube's chatBase.buildEventSubmission sends."""
    events = [{"event_id": str(uuid.uuid4()), "type": "event.user.prompt", "event_source_id": "chat.message",
               "reactive": True, "payload": {"mime": "text/plain", "event": {"text": text}}}] if text else []
    for i, (name, blob, mime) in enumerate(files):
        events.append({"event_id": str(uuid.uuid4()), "type": "event.user.attachment.file",
                       "event_source_id": "chat.attachment", "reactive": True,
                       "payload": {"mime": mime, "event": {"filename": name, "size": len(blob), "mime": mime,
                                                           "file_index": i}}})
    return {"external_events": events, "chat_history": [], "project": "demo", "tenant": "home",
            "turn_id": "turn_2026-11-30-12-00-00-001", **kw}


def digests(events) -> dict:
    step = next(d for d in events if d["event"]["step"] == "attachments_received")
    return {a["filename"]: a["sha256"] for a in step["data"]["attachments"]}


def check_deltas(deltas: list[dict]) -> None:
    assert deltas and all(isinstance(d["extra"], dict) for d in deltas), "every chat_delta has extra"
    canvas = [d for d in deltas if d["delta"]["marker"] == "canvas"]
    assert canvas[0]["extra"]["artifact_name"] == "echo.md" and canvas[0]["extra"]["format"] == "markdown"
    assert canvas[0]["delta"]["artifact_name"] == "echo.md"  # still top level, where we had it
    timeline = [d for d in deltas if d["delta"]["marker"] == "timeline_text"]
    assert timeline[0]["extra"]["artifact_name"] == "timeline"


async def test_profile_in_kdcubes_shape():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        anon = (await client.get("/profile")).json()
        assert anon["user_type"] == "ANONYMOUS" and anon["session_id"] and isinstance(anon["created_at"], float)
        assert "user_id" not in anon and "roles" not in anon
        r = await client.get("/profile", headers={"authorization": f"Bearer {tok('ada', ['admin', 'x'])}"})
        me = r.json()
        assert me["user_type"] == "PRIVILEGED" and me["user_id"] == "ada" and me["roles"] == ["admin", "x"]
        assert me["permissions"] == [] and me["session_id"] and "username" in me
        reg = (await client.get("/profile", headers={"authorization": f"Bearer {tok('bob')}"})).json()
        assert reg["user_type"] == "REGISTERED"
        assert (await client.get("/profile", headers={"authorization": "Bearer nope"})).status_code == 401


async def test_sse_kdcube_flow_json_and_multipart():
    a, b = os.urandom(3000), b"second file"
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        sid = (await client.get("/profile")).json()["session_id"]
        stream = str(uuid.uuid4())
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, f"/sse/stream?user_session_id={sid}&stream_id={stream}"
                                                    f"&tenant=home&project=demo")
            assert st.ready["session_id"] == sid and ISO.match(st.ready["timestamp"])
            assert isinstance(st.ready["ts"], int) and st.ready["roles"] == []
            r = await client.post(f"/sse/chat?stream_id={stream}&user_session_id={sid}",
                                  json=submission("hello", conversation_id="conv-k1"))
            assert r.status_code == 202, r.text
            ack = r.json()
            assert ack["ok"] is True and ack["is_continuation"] is False
            assert (ack["conversation_id"], ack["turn_id"]) == ("conv-k1", "turn_2026-11-30-12-00-00-001")
            await st.wait_for(lambda s: s.of("chat_complete"))
            check_deltas([e.data for e in st.of("chat_delta")])
            assert all(e.data["conversation"]["turn_id"] == ack["turn_id"] for e in st.of("chat_delta"))
            await st.wait_for(lambda s: s.of("conv_status") and s.of("conv_status")[-1].data["data"]["state"] == "idle")

            sub = submission("files", [("a.bin", a, "application/x-a"), ("b.txt", b, "text/plain")],
                             conversation_id="conv-k1", turn_id="turn-2")
            # files sent in the opposite order: file_index decides
            sub["external_events"][1]["payload"]["event"]["file_index"] = 1
            sub["external_events"][2]["payload"]["event"]["file_index"] = 0
            r = await client.post(f"/sse/chat?stream_id={stream}&user_session_id={sid}",
                                  data={"event_submission": __import__("json").dumps(sub)},
                                  files=[("files", ("b.txt", b, "text/plain")),
                                         ("files", ("a.bin", a, "application/x-a"))])
            assert r.status_code == 202, r.text
            await st.wait_for(lambda s: len(s.of("chat_complete")) == 2)
            steps = [e.data for e in st.of("chat_step") if e.data["conversation"]["turn_id"] == "turn-2"]
            assert digests(steps) == {"a.bin": hashlib.sha256(a).hexdigest(), "b.txt": hashlib.sha256(b).hexdigest()}
            nursery.cancel_scope.cancel()


async def test_foreign_last_event_id_starts_a_fresh_stream():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=x1",
                                   headers={"Last-Event-ID": str(uuid.uuid4())})
            assert st.status == 200 and st.ready["last_event_id_ignored"] is True
            st2 = await open_stream(nursery, client, "/sse/stream?stream_id=x2&last_event_id=" + "9" * 30)
            assert st2.status == 200 and st2.ready["last_event_id_ignored"] is True
            st3 = await open_stream(nursery, client, "/sse/stream?stream_id=x3", headers={"Last-Event-ID": "0"})
            assert "last_event_id_ignored" not in st3.ready
            nursery.cancel_scope.cancel()


async def test_refusals_carry_the_requests_ids():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=r1")
            sid = st.ready["session_id"]
            bad = {"external_events": [7], "conversation_id": "conv-r", "turn_id": "turn-r"}
            r = await client.post(f"/sse/chat?stream_id=r1&user_session_id={sid}", json=bad)
            assert r.status_code == 422
            r = await client.post(f"/sse/chat?stream_id=r1&user_session_id={sid}", content=b"{oops",
                                  headers={"content-type": "application/json"})
            assert r.status_code == 400
            await st.wait_for(lambda s: len(s.of("chat_error")) == 2)
            first, second = (e.data["conversation"] for e in st.of("chat_error"))
            assert (first["conversation_id"], first["turn_id"]) == ("conv-r", "turn-r")
            assert second["conversation_id"] not in ("-", "", None) and second["turn_id"] not in ("-", "", None)
            nursery.cancel_scope.cancel()


async def test_socketio_kdcube_chat_message_binary_files_and_acks():
    a, b = os.urandom(2048), b"bee"

    async def scenario(sio, res: SioResult):
        await res.wait_for(lambda r: r.of("session_info"))
        sub = submission("sio files", [("a.bin", a, "application/octet-stream"), ("b.txt", b, "text/plain")],
                         conversation_id="conv-s1")
        res.acks.append(await sio.call("chat_message", (sub, a, b), timeout=10))
        await res.wait_for(lambda r: r.of("chat_complete"))
        res.acks.append(await sio.call("chat_message", {"external_events": "nope", "turn_id": "t-bad"}, timeout=10))
        res.acks.append(await sio.call("conv_status.get", {"conversation_id": "conv-s1"}, timeout=10))
        res.acks.append(await sio.call("conv_status.get", {"conversation_id": "unknown"}, timeout=10))
        await res.wait_for(lambda r: r.of("chat_error"))

    async with running_gateway() as gw:
        token = tok("sio-user", ["reader"])
        res = await run_sio(gw.base_url, scenario, auth={"bearer_token": token, "tenant": "home", "project": "demo"},
                            transports=["websocket"])
    info = res.of("session_info")[0]
    assert info["roles"] == ["reader"] and info["user_type"] == "registered" and ISO.match(info["connected_at"])
    ok, refused, status, missing = res.acks
    assert ok["ok"] is True and ok["conversation_id"] == "conv-s1" and ok["is_continuation"] is False
    assert refused["ok"] is False and refused["error"] == "invalid_message" and refused["status"] == 422
    assert refused["error_type"] == "invalid_message" and refused["turn_id"] == "t-bad"
    assert status["ok"] is True and status["conversation_id"] == "conv-s1"
    assert missing["ok"] is False
    assert digests(res.of("chat_step")) == {"a.bin": hashlib.sha256(a).hexdigest(),
                                            "b.txt": hashlib.sha256(b).hexdigest()}
    check_deltas(res.of("chat_delta"))
    assert res.of("chat_error")[0]["conversation"]["turn_id"] == "t-bad"
