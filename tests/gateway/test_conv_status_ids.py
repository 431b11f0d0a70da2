"""A conversation id a client asks `conv_status.get` about is checked like the ids of a chat
message (1-128 of [A-Za-z0-9._-]) before it names a Redis key.

Before: the id went into `<prefix>:conv:<id>` as sent, so `conv-1:pending` (the list of the
continuations waiting for conv-1) made the store GET a list: a WRONGTYPE error reply, answered
500 and logged as a handler crash, on all three ways of asking.
"""

from __future__ import annotations

import httpx
import trio

from tests.support.gateway import running_gateway, test_settings
from tests.support.redis_server import redis_server
from tests.support.sse_client import open_stream


def message(turn_id: str, event_type: str = "event.user.prompt") -> dict:
    return {"external_events": [{"type": event_type, "payload": {"event": {"text": "hi"}}}],
            "conversation_id": "conv-1", "turn_id": turn_id}


async def test_conv_status_ids_are_checked_before_they_name_a_key():
    with redis_server() as srv:
        # No worker: t1 stays in progress, so the follow-up waits in conv-1's pending list.
        async with running_gateway(test_settings(redis_url=srv.url), with_worker=False) as gw, \
                httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            async with trio.open_nursery() as nursery:
                st = await open_stream(nursery, client, "/sse/stream?stream_id=tab")
                sid = st.ready["session_id"]
                url = f"/sse/chat?stream_id=tab&user_session_id={sid}"
                assert (await client.post(url, json=message("t1"))).status_code == 202
                r = await client.post(url, json=message("f1", "event.user.followup"))
                assert r.status_code == 202 and r.json()["is_continuation"], r.text

                for bad in ("conv-1:pending", "a b", "x" * 129, ""):
                    r = await client.post(f"/sse/conv_status.get?user_session_id={sid}",
                                          json={"conversation_id": bad, "stream_id": "tab"})
                    assert r.status_code == 400 and r.json()["error"] == "bad_request", (bad, r.text)
                    if bad:
                        r = await client.get("/api/conv_status", params={"conversation_id": bad,
                                                                         "user_session_id": sid})
                        assert r.status_code == 400 and r.json()["error"] == "bad_request", (bad, r.text)

                r = await client.post(f"/sse/conv_status.get?user_session_id={sid}",
                                      json={"conversation_id": "conv-1", "stream_id": "tab"})
                assert r.status_code == 200 and r.json()["state"] == "in_progress", r.text
                r = await client.get("/api/conv_status", params={"conversation_id": "conv-1", "user_session_id": sid})
                assert r.status_code == 200 and r.json()["current_turn_id"] == "t1", r.text
                nursery.cancel_scope.cancel()
