"""Project-wide events: streams opened with `project_events=true` hear every session's
`project_event`s of their tenant/project; session sequences and resume are untouched by them.
Embedded (memory bus) and through a real Redis."""

from __future__ import annotations

from contextlib import nullcontext

import httpx
import pytest
import trio

from tests.support.gateway import running_gateway, test_settings
from tests.support.redis_server import redis_server
from tests.support.sse_client import open_stream


class AnnouncingBundle:
    async def run(self, turn, comm):
        await comm.start(message=turn.message.text)
        await comm.project_event("project.notice", {"said": turn.message.text})
        await comm.complete(data={})


@pytest.mark.parametrize("bus", ["memory", "redis"])
async def test_project_listeners_hear_other_sessions_and_keep_their_own_sequence(bus):
    with (redis_server() if bus == "redis" else nullcontext()) as srv:
        settings = test_settings(redis_url=srv.url if srv else None)
        async with running_gateway(settings, bundle=AnnouncingBundle()) as gw, \
                httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client, trio.open_nursery() as nursery:
            listener = await open_stream(nursery, client, "/sse/stream?stream_id=l&project_events=true")
            plain = await open_stream(nursery, client, "/sse/stream?stream_id=p")
            lsid, psid = listener.ready["session_id"], plain.ready["session_id"]
            # the listener's own session first gets a few events, so its seq is ahead
            for i in range(3):
                r = await client.post(f"/sse/chat?stream_id=l&user_session_id={lsid}",
                                      json={"message": f"mine {i}"})
                assert r.status_code == 202
                await listener.wait_event("chat_complete", count=i + 1)
            r = await client.post(f"/sse/chat?stream_id=p&user_session_id={psid}", json={"message": "hello all"})
            assert r.status_code == 202
            await plain.wait_event("chat_complete")
            await listener.wait_for(lambda s: len(s.of("chat_step")) >= 4)
            nursery.cancel_scope.cancel()
    notices = [e for e in listener.of("chat_step") if e.data["type"] == "project.notice"]
    assert [n.data["data"]["said"] for n in notices] == ["mine 0", "mine 1", "mine 2", "hello all"]
    for n in notices:  # no `id:` of their own: the stream's last id stays the session's
        before = listener.events[listener.events.index(n) - 1]
        assert n.id == before.id
    assert not [e for e in plain.of("chat_step") if e.data["type"] == "project.notice"]
    ids = [int(e.id) for e in listener.events if e.id and e not in notices]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
