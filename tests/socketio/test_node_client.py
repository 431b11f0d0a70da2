"""The official Node socket.io-client (npm) against a gateway started in the test."""

from __future__ import annotations

import json
import time

import pytest
import trio

from kdc_trio.auth.mint import mint_token
from tests.gateway.test_e2e_sse import MARKERS
from tests.support.gateway import running_gateway, test_settings
from tests.support.node import node_client_dir


async def run_node(url: str, transports: str, auth: dict, text: str, sizes: str = "") -> dict:
    cwd = node_client_dir()
    with trio.fail_after(30):
        proc = await trio.run_process(["node", "chat_client.mjs", url, transports, json.dumps(auth), text, sizes],
                                      cwd=cwd, capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    return json.loads(proc.stdout)


@pytest.mark.parametrize("transports", ["websocket", "polling", "polling,websocket"])
async def test_node_client_chat_with_attachments(transports):
    async with running_gateway() as gw:
        out = await run_node(gw.base_url, transports, {}, "hello from node", "1200000,5")
    assert out["connected"] and out["session_info"]["user_type"] == "anonymous"
    assert out["transport"] == transports.split(",")[-1]
    assert out["ack"]["status"] == "processing_started"
    names = [e["event"] for e in out["events"] if e["event"] not in ("session_info", "conv_status")]
    assert names[0] == "chat_start" and names[-1] == "chat_complete"
    seqs = [e["data"]["seq"] for e in out["events"] if e["event"] != "session_info"]
    assert seqs == sorted(seqs)
    deltas = [e["data"] for e in out["events"] if e["event"] == "chat_delta"]
    assert {d["delta"]["marker"] for d in deltas} == MARKERS
    step = next(e["data"] for e in out["events"]
                if e["event"] == "chat_step" and e["data"]["event"]["step"] == "attachments_received")
    got = {a["filename"]: a["sha256"] for a in step["data"]["attachments"]}
    assert got == {f["filename"]: f["sha256"] for f in out["sent"]}


async def test_node_client_with_token_and_refused():
    settings = test_settings(ws_reject_anonymous=True)
    token = mint_token(settings, subject="bob", roles=("admin",), ttl_s=600)
    now = int(time.time())
    stale = mint_token(settings, subject="bob", extra={"iat": now - 900, "nbf": now - 900, "exp": now - 600})
    async with running_gateway(settings) as gw:
        ok = await run_node(gw.base_url, "websocket", {"bearer_token": token}, "-")
        refused = await run_node(gw.base_url, "websocket", {}, "-")
        expired = await run_node(gw.base_url, "websocket",
                                 {"bearer_token": stale}, "-")
    assert ok["session_info"]["user_type"] == "privileged" and ok["session_info"]["user_id"] == "bob"
    assert refused["connect_error"]["message"] == "authentication_required"
    assert "expired" in expired["connect_error"]["message"] and not expired["connected"]


async def test_kdcube_web_app_socketio_path_with_the_official_client():
    """KDCube's socketIOChat: /profile, auth + handshake query, emitWithAck with ArrayBuffers."""
    cwd = node_client_dir()
    async with running_gateway() as gw:
        with trio.fail_after(30):
            proc = await trio.run_process(["node", "kdcube_sio.mjs", gw.base_url, "acme", "site"], cwd=cwd,
                                          capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    out = json.loads(proc.stdout)
    assert out["profile"]["user_type"] == "ANONYMOUS"
    info = out["session_info"]
    assert info["session_id"] == out["profile"]["session_id"] and info["roles"] == [] and info["tenant"] == "acme"
    assert out["rejected"] == "invalid_message", "a refusal is never taken for accepted (ok: false)"
    ack = out["ack"]
    assert ack["ok"] is True and ack["turn_id"] == "turn_2026-11-30-17-00-00-001" and ack["is_continuation"] is False
    events = [(e["event"], e["data"]) for e in out["events"]]
    step = next(d for ev, d in events if ev == "chat_step" and d["event"]["step"] == "attachments_received")
    assert {a["filename"]: a["sha256"] for a in step["data"]["attachments"]} == out["sent"]
    assert all(isinstance(d["extra"], dict) for ev, d in events if ev == "chat_delta")
    bad = [d for ev, d in events if ev == "chat_error"]
    assert bad and bad[0]["conversation"]["turn_id"] == "turn-bad"
    statuses = [d for ev, d in events if ev == "conv_status"]
    assert statuses and all(d["conversation"]["conversation_id"] == ack["conversation_id"] for d in statuses)


async def test_node_client_past_its_rate_limit_gets_an_ack_error_and_the_event():
    settings = test_settings(rate_limits=True, rate_anonymous_burst=1, rate_connect_factor=0)
    async with running_gateway(settings) as gw:
        first = await run_node(gw.base_url, "websocket", {}, "one")
        sid = first["session_info"]["session_id"]
        second = await run_node(gw.base_url, "websocket", {"user_session_id": sid}, "two")
    assert first["ack"]["ok"] is True
    ack = second["ack"]
    assert ack["ok"] is False and ack["status"] == 429 and ack["error_type"] == "rate_limit" and ack["retry_after"] >= 1
    [event] = [e["data"] for e in second["events"]
               if e["event"] == "chat_service" and e["data"]["type"] == "gateway.rate_limit"]
    assert event["data"]["retry_after"] == ack["retry_after"]
