"""A real SSE client (httpx + httpx-sse) that collects events in a background task."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from httpx_sse import aconnect_sse


@dataclass
class Received:
    event: str
    id: str
    data: Any


@dataclass
class SSEStream:
    events: list[Received] = field(default_factory=list)
    ready: dict | None = None
    status: int | None = None
    error_body: Any = None
    ended: bool = False  # the server ended the stream (or it was refused)
    dropped: BaseException | None = None
    _opened: trio.Event = field(default_factory=trio.Event)
    _changed: trio.Event = field(default_factory=trio.Event)

    def of(self, event: str) -> list[Received]:
        return [e for e in self.events if e.event == event]

    async def wait_for(self, pred, timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while not pred(self):
                self._changed = trio.Event()
                await self._changed.wait()

    async def wait_for_type(self, type_: str, timeout: float = 10.0) -> list[Received]:
        """`chat_service` (or any) events whose envelope `type` is `type_`, once there is one."""
        def found(s: "SSEStream") -> list[Received]:
            return [e for e in s.events if isinstance(e.data, dict) and e.data.get("type") == type_]

        await self.wait_for(lambda s: bool(found(s)), timeout)
        return found(self)

    async def wait_event(self, event: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        await self.wait_for(lambda s: len(s.of(event)) >= count, timeout)
        return self.of(event)


async def _run(client: httpx.AsyncClient, url: str, st: SSEStream, headers: dict, tolerate_drop: bool = False) -> None:
    try:
        await _read(client, url, st, headers)
    except (httpx.TransportError, httpx.StreamError) as exc:
        if not tolerate_drop:
            raise
        st.dropped = exc
    finally:
        st.ended = True
        st._opened.set()
        st._changed.set()


async def _read(client: httpx.AsyncClient, url: str, st: SSEStream, headers: dict) -> None:
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        st.status = source.response.status_code
        if st.status != 200:
            await source.response.aread()
            st.error_body = source.response.json()
            return
        async for sse in source.aiter_sse():
            data = json.loads(sse.data) if sse.data else None
            if sse.event == "ready":
                st.ready = data
                st._opened.set()
            st.events.append(Received(sse.event, sse.id, data))
            st._changed.set()


async def open_stream(nursery: trio.Nursery, client: httpx.AsyncClient, url: str, *,
                      headers: dict | None = None, timeout: float = 10.0, tolerate_drop: bool = False) -> SSEStream:
    """Open a stream in `nursery`; returns once `ready` arrived (or the stream was refused). With
    `tolerate_drop` a connection that breaks just ends the stream (`st.dropped` says how)."""
    st = SSEStream()
    nursery.start_soon(_run, client, url, st, headers or {}, tolerate_drop)
    with trio.fail_after(timeout):
        await st._opened.wait()
    return st


async def open_stream_and_post(nursery: trio.Nursery, client: httpx.AsyncClient, base_url: str, stream_id: str,
                               message: str, *, session_id: str | None = None) -> SSEStream:
    """A stream (of `session_id`, else a new session) and a turn posted to it (202 checked)."""
    session = f"&user_session_id={session_id}" if session_id else ""
    st = await open_stream(nursery, client, f"{base_url}/sse/stream?stream_id={stream_id}{session}")
    sid = st.ready["session_id"]
    r = await client.post(f"{base_url}/sse/chat?stream_id={stream_id}&user_session_id={sid}", json={"message": message})
    assert r.status_code == 202, r.text
    return st
