"""python-socketio's AsyncClient against a gateway started in the test: websocket, polling,
and polling upgraded to websocket; tokens; chat_message with binary attachments; the ack."""

from __future__ import annotations

import hashlib
import os

import pytest

from kdc_trio.auth.mint import mint_token
from tests.gateway.test_e2e_sse import MARKERS
from tests.support.gateway import running_gateway, test_settings
from tests.support.sio_client import SioResult, run_sio

TRANSPORTS = {"websocket": ["websocket"], "polling": ["polling"], "upgrade": ["polling", "websocket"]}


def check_sio_turn(res: SioResult, *, text: str, files: dict[str, bytes]) -> None:
    names = [e for e in res.names() if e not in ("session_info", "conv_status", "pong")]
    assert names[0] == "chat_start" and names[-1] == "chat_complete"
    seqs = [d["seq"] for e, d in res.events if e not in ("session_info", "pong")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "every event carries the session sequence"
    deltas = res.of("chat_delta")
    assert {d["delta"]["marker"] for d in deltas} == MARKERS
    assert "".join(d["delta"]["text"] for d in deltas if d["delta"]["marker"] == "answer") == f"You said: {text}"
    steps = {d["event"]["step"]: d for d in res.of("chat_step")}
    got = {a["filename"]: a for a in steps["attachments_received"]["data"]["attachments"]}
    assert set(got) == set(files)
    for name, blob in files.items():
        assert got[name]["sha256"] == hashlib.sha256(blob).hexdigest()


@pytest.mark.parametrize("mode", list(TRANSPORTS))
async def test_chat_message_with_attachments(mode):
    big, small = os.urandom(1_300_000), b"hello attachment"
    files = {"big.bin": big, "small.txt": small}

    async def scenario(sio, res: SioResult):
        await res.wait_for(lambda r: r.of("session_info"))
        payload = {"message": {"text": "two files over socket.io"},
                   "attachment_meta": [{"filename": "big.bin", "mime": "application/octet-stream"},
                                       {"filename": "small.txt", "mime": "text/plain"}]}
        res.acks.append(await sio.call("chat_message", (payload, big, small), timeout=10))
        await res.wait_for(lambda r: r.of("chat_complete") and any(
            d["data"]["state"] == "idle" for d in r.of("conv_status")))

    async with running_gateway() as gw:
        res = await run_sio(gw.base_url, scenario, transports=TRANSPORTS[mode])
    assert res.connected, res.connect_error
    assert res.transport == TRANSPORTS[mode][-1]
    info = res.of("session_info")[0]
    assert info["user_type"] == "anonymous" and info["tenant"] == "home" and info["project"] == "demo"
    ack = res.acks[0]
    assert ack["status"] == "processing_started" and ack["conversation_id"] and ack["turn_id"]
    check_sio_turn(res, text="two files over socket.io", files=files)


async def test_list_of_attachments_inside_the_payload():
    blobs = [b"one", b"two"]

    async def scenario(sio, res):
        payload = {"message": "in a list", "attachment_meta": [{"filename": "1"}, {"filename": "2"}],
                   "files": blobs}
        res.acks.append(await sio.call("chat_message", payload, timeout=10))
        await res.wait_for(lambda r: r.of("chat_complete"))

    async with running_gateway() as gw:
        res = await run_sio(gw.base_url, scenario, transports=["websocket"])
    check_sio_turn(res, text="in a list", files={"1": b"one", "2": b"two"})


async def test_count_mismatch_and_limits_are_acked_as_errors():
    async def scenario(sio, res):
        res.acks.append(await sio.call("chat_message", ({"message": "x", "attachment_meta": [{"filename": "a"}]},
                                                         b"a", b"b"), timeout=10))
        res.acks.append(await sio.call("chat_message", {"message": "y" * 50}, timeout=10))
        res.acks.append(await sio.call("chat_message", ({"message": "z"}, b"x" * 2048), timeout=10))
        await res.wait_for(lambda r: len(r.of("chat_error")) >= 3)  # the stream's copy may trail the ack

    settings = test_settings(max_message_chars=10, max_upload_mb=1 / 1024)
    async with running_gateway(settings) as gw:
        res = await run_sio(gw.base_url, scenario, transports=["websocket"])
        assert gw.counters.turns_accepted == 0, "nothing is enqueued"
    mismatch, too_long, too_big = res.acks
    assert "1" in mismatch["detail"] and "2" in mismatch["detail"], mismatch
    assert too_long["limit"] == "CHAT_MAX_MESSAGE_CHARS"
    assert too_big["limit"] == "CHAT_MAX_UPLOAD_MB" and too_big["status"] == 413
    assert len(res.of("chat_error")) == 3, "each refusal is also told on the socket"


async def test_token_makes_a_registered_session_and_a_bad_token_is_refused():
    settings = test_settings()
    token = mint_token(settings, subject="alice", roles=(), ttl_s=600, username="Alice")

    async def idle(sio, res):
        await res.wait_for(lambda r: r.of("session_info"))

    async with running_gateway(settings) as gw:
        ok = await run_sio(gw.base_url, idle, auth={"bearer_token": token}, transports=["websocket"])
        header = await run_sio(gw.base_url, idle, headers={"Authorization": f"Bearer {token}"},
                               transports=["polling"])
        bad = await run_sio(gw.base_url, idle, auth={"bearer_token": token[:-4] + "AAAA"}, transports=["websocket"])
    info = ok.of("session_info")[0]
    assert info["user_type"] == "registered" and info["user_id"] == "alice" and info["username"] == "Alice"
    assert header.of("session_info")[0]["user_id"] == "alice"
    assert not bad.connected
    assert "signature" in str(bad.connect_error).lower() or "invalid" in str(bad.connect_error).lower()


async def test_reject_anonymous_refuses_tokenless_connect():
    settings = test_settings(ws_reject_anonymous=True)

    async def idle(sio, res):
        pass

    async with running_gateway(settings) as gw:
        res = await run_sio(gw.base_url, idle, transports=["websocket"])
    assert not res.connected
    assert "authentication_required" in str(res.connect_error)


async def test_conv_status_get_and_ping():
    async def scenario(sio, res):
        ack = await sio.call("chat_message", {"message": "hi"}, timeout=10)
        await res.wait_for(lambda r: r.of("chat_complete"))
        res.acks.append(await sio.call("conv_status.get", {"conversation_id": ack["conversation_id"]}, timeout=10))
        res.acks.append(await sio.call("conv_status.get", {"conversation_id": "nope"}, timeout=10))
        await sio.emit("ping", {})
        await res.wait_for(lambda r: r.of("pong"))

    async with running_gateway() as gw:
        res = await run_sio(gw.base_url, scenario, transports=["websocket"])
    status, missing = res.acks
    assert status["state"] == "idle" and status["completion"] == "success"
    assert missing["error"] == "conversation_not_found"
    assert res.of("conv_status")[-1]["data"]["state"] == "idle"
    assert "timestamp" in res.of("pong")[0]
