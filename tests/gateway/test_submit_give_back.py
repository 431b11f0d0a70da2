"""A turn that could not be queued gives its conversation back (idle, completion `rollback`).

Before: only a full queue (QueueFull) rolled the status back; when the put failed otherwise (Redis
unreachable: 503; or the request cancelled), the conversation stayed `in_progress` for a turn that
never ran, and every later message to it was accepted as a continuation that waited for that turn
until the status expired. The failure is injected at the queue's put (the only way to make Redis
fail between the status write and the XADD); everything else is the real gateway.
"""

from __future__ import annotations

import httpx

from kdc_trio.redis.connection import RedisConnectionError
from tests.support.gateway import running_gateway, test_settings


def message(turn_id: str) -> dict:
    return {"external_events": [{"type": "event.user.prompt", "payload": {"event": {"text": "hi"}}}],
            "conversation_id": "conv-1", "turn_id": turn_id}


async def test_a_turn_that_could_not_be_queued_gives_its_conversation_back(monkeypatch):
    async with running_gateway(test_settings(), with_worker=False) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        sid = (await client.get("/profile")).json()["session_id"]
        url = f"/sse/chat?stream_id=tab&user_session_id={sid}"
        real_put = gw.queue.put

        async def unreachable(turn):
            raise RedisConnectionError("connection refused")

        monkeypatch.setattr(gw.queue, "put", unreachable)
        r = await client.post(url, json=message("t1"))
        assert r.status_code == 503, r.text
        r = await client.get("/api/conv_status", params={"conversation_id": "conv-1", "user_session_id": sid})
        assert (r.json()["state"], r.json()["completion"]) == ("idle", "rollback"), r.text

        monkeypatch.setattr(gw.queue, "put", real_put)
        r = await client.post(url, json=message("t2"))
        assert r.status_code == 202 and not r.json()["is_continuation"], r.text
        r = await client.get("/api/conv_status", params={"conversation_id": "conv-1", "user_session_id": sid})
        assert (r.json()["state"], r.json()["current_turn_id"]) == ("in_progress", "t2"), r.text
