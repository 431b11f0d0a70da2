"""Continuations end to end, as KDCube's web app sends them: a follow-up during a running turn
is accepted (202, `is_continuation`), the bundle takes it (`turn.next_continuation`), or it runs
as the next turn (`queued_next`); steers are answered as KDCube answers them. In memory, and
through Redis with the bundle in a separate worker process."""

from __future__ import annotations

import json
from contextlib import ExitStack, asynccontextmanager

import httpx
import pytest
import trio

from tests.support.bundles import ContinuationBundle
from tests.support.gateway import running_gateway, test_settings
from tests.support.processes import KdcProcess
from tests.support.redis_server import redis_server
from tests.support.sio_client import run_sio
from tests.support.sse_client import open_stream

BUNDLE = "tests.support.bundles:ContinuationBundle"


def message(text: str, turn_id: str, *, event_type: str = "event.user.prompt", target: str | None = None) -> dict:
    body = {"external_events": [{"type": event_type, "reactive": True,
                                 "payload": {"mime": "text/plain", "event": {"text": text}}}],
            "conversation_id": "conv-1", "turn_id": turn_id, "chat_history": []}
    if target:
        body["active_turn_id"] = body["target_turn_id"] = target
    return body


@asynccontextmanager
async def gateway(kind: str, **overrides):
    """A gateway whose turns run in this process (memory), or in a worker process (Redis)."""
    if kind == "memory":
        async with running_gateway(test_settings(**overrides), bundle=ContinuationBundle()) as gw:
            yield gw
        return
    with redis_server() as srv, ExitStack() as stack:
        env = {"REDIS_URL": srv.url, "KDC_BUNDLE": BUNDLE, "KDC_CONTINUATION_POLL_MS": "20"}
        worker = KdcProcess("worker", env)
        stack.callback(worker.stop)
        worker.wait_ready()
        async with running_gateway(test_settings(redis_url=srv.url, **overrides), with_worker=False) as gw:
            yield gw


def turn_of(e) -> str:
    return e.data["conversation"]["turn_id"]


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_follow_up_taken_by_the_running_turn_or_run_next_and_steers(kind):
    async with gateway(kind) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=tab")
            url = f"/sse/chat?stream_id=tab&user_session_id={st.ready['session_id']}"

            # 1. the running turn takes a follow-up (multipart, with a file)
            assert (await client.post(url, json=message("take", "t1"))).status_code == 202
            await st.wait_for(lambda s: any(turn_of(e) == "t1" for e in s.of("chat_start")), timeout=20)
            sub = message("more please", "f1", event_type="event.user.followup", target="t1")
            r = await client.post(url, data={"event_submission": json.dumps(sub)},
                                  files=[("files", ("n.txt", b"note", "text/plain"))])
            assert r.status_code == 202, r.text
            ack = r.json()
            assert ack["ok"] and ack["is_continuation"] and ack["status"] == "external_event_accepted"
            assert (ack["active_turn_id"], ack["queued_turn_id"], ack["target_turn_id"]) == ("t1", "f1", "t1")
            assert ack["live_owner_detected"] is True and ack["turn_id"] == "f1"
            await st.wait_for(lambda s: s.of("conv_status") and s.of("conv_status")[-1].data["data"]["state"] == "idle",
                              timeout=20)
            said = [e.data["delta"]["text"] for e in st.of("chat_delta") if turn_of(e) == "t1"]
            assert said == ["took event.user.followup: more please (1 files)"]
            assert not any(turn_of(e) == "f1" for e in st.of("chat_start")), "taken: it never runs as a turn"
            accepted = [e.data for e in st.of("chat_service") if e.data["type"] == "event.continuation.accepted"]
            assert accepted and accepted[0]["data"]["active_turn_id"] == "t1"

            # 2. a follow-up the turn does not take runs next; a stale steer is answered, not run;
            #    a steer left untaken is dropped, and told
            assert (await client.post(url, json=message("hold 1.5", "t2"))).status_code == 202
            await st.wait_for(lambda s: any(turn_of(e) == "t2" for e in s.of("chat_start")), timeout=20)
            r = await client.post(url, json=message("stop", "s0", event_type="event.user.steer", target="t-old"))
            assert r.status_code == 202 and r.json()["status"] == "active_turn_control_target_mismatch"
            assert r.json()["is_continuation"] is True and r.json()["active_turn_id"] == "t2"
            r = await client.post(url, json=message("then this", "f2", event_type="event.user.followup", target="t2"))
            assert r.json()["is_continuation"] is True
            r = await client.post(url, json=message("", "s1", event_type="event.user.steer", target="t2"))
            assert r.json()["is_continuation"] is True and r.json()["status"] == "external_event_accepted"
            await st.wait_for(lambda s: any(turn_of(e) == "f2" for e in s.of("chat_complete")), timeout=20)
            await st.wait_for(lambda s: s.of("conv_status")[-1].data["data"]["state"] == "idle", timeout=20)
            queued = [e.data["data"] for e in st.of("conv_status") if e.data["data"]["completion"] == "queued_next"]
            assert queued and queued[0]["current_turn_id"] == "f2" and queued[0]["state"] == "in_progress"
            starts = [turn_of(e) for e in st.of("chat_start")]
            assert starts == ["t1", "t2", "f2"], "s0 and s1 never ran as turns"
            assert [e.data["delta"]["text"] for e in st.of("chat_delta") if turn_of(e) == "f2"] == \
                ["answer to then this"]
            dropped = [e.data for e in st.of("chat_service") if e.data["type"] == "event.continuation.dropped"]
            assert [d["conversation"]["turn_id"] for d in dropped] == ["s1"]

            # 3. a steer with no running turn: answered, nothing runs
            r = await client.post(url, json=message("stop", "s2", event_type="event.user.steer", target="f2"))
            assert r.status_code == 202 and r.json()["status"] == "active_turn_control_no_active_turn"
            assert r.json()["active_turn_id"] is None
            # 4. a follow-up after the turn ended starts a new turn (KDCube: "a new turn was started instead")
            r = await client.post(url, json=message("late", "f3", event_type="event.user.followup", target="f2"))
            assert r.json()["is_continuation"] is False and r.json()["status"] == "processing_started"
            await st.wait_for(lambda s: any(turn_of(e) == "f3" for e in s.of("chat_complete")), timeout=20)
            nursery.cancel_scope.cancel()


async def test_too_many_continuations_is_429_and_reject_restores_409():
    async with gateway("memory", max_continuations=1) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=tab")
            url = f"/sse/chat?stream_id=tab&user_session_id={st.ready['session_id']}"
            await client.post(url, json=message("hold 1", "t1"))
            assert (await client.post(url, json=message("a", "f1", event_type="event.user.followup"))).status_code \
                == 202
            r = await client.post(url, json=message("b", "f2", event_type="event.user.followup"))
            assert r.status_code == 429 and r.json()["error"] == "continuations_full"
            assert r.headers["retry-after"]
            nursery.cancel_scope.cancel()
    async with gateway("memory", conv_busy_policy="reject") as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        await client.post("/sse/chat?stream_id=x", json=message("hold 1", "t1"))
        r = await client.post("/sse/chat?stream_id=x", json=message("a", "f1", event_type="event.user.followup"))
        assert r.status_code == 409 and r.json()["error"] == "conversation_busy"


async def test_socketio_follow_up_ack_says_continuation():
    async def scenario(sio, res):
        await res.wait_for(lambda r: r.of("session_info"))
        res.acks.append(await sio.call("chat_message", message("take", "t1"), timeout=10))
        await res.wait_for(lambda r: r.of("chat_start"))
        res.acks.append(await sio.call("chat_message", message("over sio", "f1", event_type="event.user.followup",
                                                               target="t1"), timeout=10))
        await res.wait_for(lambda r: r.of("chat_complete"))

    async with gateway("memory") as gw:
        res = await run_sio(gw.base_url, scenario, transports=["websocket"])
    first, follow = res.acks
    assert first["ok"] and first["is_continuation"] is False
    assert follow["ok"] and follow["is_continuation"] and follow["active_turn_id"] == "t1"
    assert res.of("chat_delta")[0]["delta"]["text"] == "took event.user.followup: over sio (0 files)"


async def test_the_demo_bundle_answers_a_follow_up_and_a_steer_in_its_turn(monkeypatch):
    from kdc_trio.bundles import demo

    monkeypatch.setattr(demo, "DELTA_PAUSE_S", 0.2)  # a slow demo: time to send while it answers
    async with running_gateway(test_settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=tab")
            url = f"/sse/chat?stream_id=tab&user_session_id={st.ready['session_id']}"
            words = " ".join(f"w{i}" for i in range(30))
            assert (await client.post(url, json=message(words, "t1"))).status_code == 202
            await st.wait_for(lambda s: any(e.data["delta"]["marker"] == "answer" for e in s.of("chat_delta")))
            sub = message("and this", "f1", event_type="event.user.followup", target="t1")
            r = await client.post(url, data={"event_submission": json.dumps(sub)},
                                  files=[("files", ("x.txt", b"xx", "text/plain"))])
            assert r.json()["is_continuation"] is True
            r = await client.post(url, json=message("shorter please", "s1", event_type="event.user.steer",
                                                    target="t1"))
            assert r.json()["is_continuation"] is True
            await st.wait_for(lambda s: s.of("conv_status") and s.of("conv_status")[-1].data["data"]["state"] == "idle",
                              timeout=20)
            nursery.cancel_scope.cancel()
    assert [turn_of(e) for e in st.of("chat_start")] == ["t1"]
    answer = "".join(e.data["delta"]["text"] for e in st.of("chat_delta") if e.data["delta"]["marker"] == "answer")
    assert answer.endswith("\n\nYou added: and this")
    steps = {e.data["event"]["step"]: e.data["data"] for e in st.of("chat_step")}
    assert steps["steer_received"]["text"] == "shorter please"
    assert steps["continuation_received"]["attachments"][0]["filename"] == "x.txt"
