"""One client-error family: every refusal is a ClientError, rendered in one place per transport.

These pin the replies at the wire (status, headers, body key order; Socket.IO CONNECT_ERROR and
ack text) for each kind of refusal: auth, session, stream id, ingress limit, busy conversation,
full queue.
"""

from __future__ import annotations

import json

import httpx
import pytest

from kdc_trio.auth.errors import AuthError
from kdc_trio.errors import ClientError
from kdc_trio.ingress.errors import IngressError
from kdc_trio.processor.queue import QueueFull
from kdc_trio.server import HTTPError
from kdc_trio.server.connection import error_reply
from kdc_trio.sessions.resolver import SessionError
from protocol.errors import RemoteProtocolError
from tests.support.gateway import running_gateway, test_settings

EIO = "/socket.io/?EIO=4"
WWW_AUTH = 'Bearer realm="kdc-trio"'


def test_every_refusal_is_a_client_error():
    for exc in (AuthError("bad_signature"), SessionError(403, "session_forbidden", "no"), QueueFull("full"),
                IngressError(413, "payload_too_large", "big", "MESSAGE_MAX_BYTES"), HTTPError(404, "not_found")):
        assert isinstance(exc, ClientError), exc
    ingress = IngressError(413, "payload_too_large", "big", "MESSAGE_MAX_BYTES")
    assert isinstance(ingress, RemoteProtocolError) and ingress.error_status_hint == 413
    assert ingress.close_code_hint == 1009 and ingress.reason == "payload_too_large" and str(ingress) == "big"
    assert (AuthError("token_expired").status, AuthError("token_expired").detail) == (401, "the token was rejected")
    assert (QueueFull("x").status, QueueFull("x").error, QueueFull("x").retry_after) == (503, "queue_full", 5)


@pytest.mark.parametrize("exc,headers,body", [
    (ClientError(401, "authentication_required", "a token"), [("www-authenticate", WWW_AUTH)],
     {"error": "authentication_required", "detail": "a token"}),
    (QueueFull("1 turns waiting"), [("retry-after", "5")], {"error": "queue_full", "detail": "1 turns waiting"}),
    (IngressError(413, "payload_too_large", "big", "MESSAGE_MAX_BYTES"), [("connection", "close")],
     {"error": "payload_too_large", "detail": "big", "limit": "MESSAGE_MAX_BYTES"}),
    (HTTPError(413, "payload_too_large", "b", headers=[("connection", "close")]), [("connection", "close")],
     {"error": "payload_too_large", "detail": "b"}),
    (HTTPError(429, "too_many_streams", "x", headers=[("retry-after", "5")]), [("retry-after", "5")],
     {"error": "too_many_streams", "detail": "x"}),
    (SessionError(403, "session_forbidden", "not yours"), [], {"error": "session_forbidden", "detail": "not yours"}),
])
def test_the_http_rendering(exc, headers, body):
    got_headers, got_body = error_reply(exc)
    assert got_headers == headers
    assert list(got_body.items()) == list(body.items())


async def test_http_replies_of_each_refusal():
    # reject: a busy conversation's 409 (the default takes the message as a continuation)
    settings = test_settings(turn_queue_size=1, message_max_bytes=1000, conv_busy_policy="reject")
    async with running_gateway(settings, with_worker=False) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        r = await client.get("/api/session", headers={"authorization": "Bearer not-a-jwt"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == WWW_AUTH
        assert list(r.json()) == ["error", "detail"] and r.json()["error"] == "malformed_token"

        r = await client.get("/api/session", params={"user_session_id": "nope"})
        assert (r.status_code, r.json()) == (401, {"error": "unknown_session", "detail": "Unknown session"})
        assert r.headers["www-authenticate"] == WWW_AUTH

        r = await client.get("/sse/stream", params={"stream_id": "bad id"})
        assert r.status_code == 400 and "www-authenticate" not in r.headers
        assert r.json() == {"error": "bad_request", "detail": "stream_id must be 1-128 of [A-Za-z0-9._-]"}

        sid = (await client.get("/api/session")).json()["session_id"]
        chat = f"/sse/chat?stream_id=s1&user_session_id={sid}"
        r = await client.post(chat, json={"message": {"text": "x" * 2000}})
        assert r.status_code == 413 and r.headers["connection"] == "close"
        assert list(r.json()) == ["error", "detail", "limit"] and r.json()["limit"] == "MESSAGE_MAX_BYTES"

    async with running_gateway(settings, with_worker=False) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        sid = (await client.get("/api/session")).json()["session_id"]
        chat = f"/sse/chat?stream_id=s1&user_session_id={sid}"
        first = await client.post(chat, json={"message": {"text": "one", "conversation_id": "c1"}})
        assert first.status_code == 202, first.text
        r = await client.post(chat, json={"message": {"text": "two", "conversation_id": "c1"}})
        assert r.status_code == 409 and r.json()["error"] == "conversation_busy" and "retry-after" not in r.headers
        r = await client.post(chat, json={"message": {"text": "three", "conversation_id": "c2"}})
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json() == {"error": "queue_full", "detail": "1 turns waiting (KDC_TURN_QUEUE_SIZE)"}


async def _sio_connect(client: httpx.AsyncClient, connect_packet: str, *, headers: dict | None = None) -> str:
    """Polling handshake, a CONNECT, and the first reply to it (the raw Socket.IO text)."""
    r = await client.get(f"{EIO}&transport=polling", headers=headers)
    sid = json.loads(r.text[1:])["sid"]
    url = f"{EIO}&transport=polling&sid={sid}"
    assert (await client.post(url, content=connect_packet.encode(), headers=headers)).status_code == 200
    return (await client.get(url, headers=headers)).text


async def test_socketio_connect_errors_and_acks():
    settings = test_settings(turn_queue_size=1)
    async with running_gateway(settings, with_worker=False) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        got = await _sio_connect(client, '40{"bearer_token":"not-a-jwt"}')
        assert got.startswith('44{"message":"malformed_token","data":{"status":401,"detail":'), got
        got = await _sio_connect(client, '40{"user_session_id":"nope"}')
        assert got == '44{"message":"unknown_session","data":{"status":401,"detail":"Unknown session"}}'
        got = await _sio_connect(client, '40{"tenant":"no spaces"}')
        assert got == ('44{"message":"bad_request","data":{"status":400,'
                       '"detail":"tenant must be 1-128 of [A-Za-z0-9._-]"}}')

        r = await client.get(f"{EIO}&transport=polling")
        sid = json.loads(r.text[1:])["sid"]
        url = f"{EIO}&transport=polling&sid={sid}"
        await client.post(url, content=b"40")
        assert (await client.get(url)).text.startswith("40")
        for n, conv in ((1, "c1"), (2, "c2")):
            msg = json.dumps(["chat_message", {"message": {"text": "hi", "conversation_id": conv}}])
            await client.post(url, content=f"42{n}{msg}".encode())
        acks = []
        while len(acks) < 2:
            for record in (await client.get(url)).text.split("\x1e"):
                if record.startswith("43"):
                    acks.append(record)
        assert acks[1].startswith('432[{"ok":false,"error":"queue_full","error_type":"queue_full",'
                                  '"detail":"1 turns waiting (KDC_TURN_QUEUE_SIZE)","status":503,"retry_after":5,'
                                  '"conversation_id":"c2","turn_id":'), acks[1]


async def test_a_refused_stream_says_when_to_retry():
    async with running_gateway(test_settings(max_sse_connections=0)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        r = await client.get("/sse/stream")
    assert (r.status_code, r.headers["retry-after"]) == (429, "5")
    assert r.json() == {"error": "too_many_streams", "detail": "this process serves at most 0 streams"}
