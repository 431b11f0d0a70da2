"""The producer API for bundle authors: ChatCommunicator, bound to one turn.

Each call builds a KDCube envelope (protocol/envelope.py), asks the event filter whether
this user may receive it, and publishes it on the session's channel: to the connection that
sent the turn (the default for turn events, as in KDCube) or to the whole session
(`broadcast=True`; the default for `conv_status`).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, Protocol

from protocol import envelope as env
from kdc_trio.relay.bus import Poster
from kdc_trio.relay.keys import SessionKey

log = logging.getLogger("kdc_trio.sdk")

Publish = Callable[..., Awaitable[int]]


class EventFilter(Protocol):
    def __call__(self, user_type: str, user_id: str | None, event: dict) -> bool: ...


class ChatCommunicator:
    def __init__(self, *, publish: Publish, key: SessionKey, svc: env.ServiceCtx, conv: env.ConvCtx,
                 origin_sid: str | None, event_filter: EventFilter | None = None,
                 filter_fail_open: bool = False, project_key: SessionKey | None = None, attempt: int = 1) -> None:
        self._publish = publish
        self.attempt = attempt  # >1 when a worker died mid-turn and another one runs it again
        self.key = key
        self.svc = svc
        self.conv = conv
        self.origin_sid = origin_sid
        self._filter = event_filter
        self._fail_open = filter_fail_open
        self._filter_failed_logged = False
        self._project_key = project_key
        self.emitted = 0
        # While a bundle runs (the runner sets it): its events go out pipelined (relay/bus.py
        # Poster; through Redis, `post` returns before Redis answered and `flush` waits).
        self.poster: Poster | None = None

    # ---- families ------------------------------------------------------------------------
    async def start(self, message: str | None = None, *, agent: str | None = None, data: dict | None = None,
                    broadcast: bool = False) -> int | None:
        if self.attempt > 1:  # a retried turn says so, so clients can drop the partial first try
            data = {**(data or {}), "attempt": self.attempt, "retried": True}
        return await self._emit(env.start(self.svc, self.conv, message=message, agent=agent, data=data), broadcast)

    async def step(self, step: str, status: str = "running", title: str | None = None, agent: str | None = None,
                   data: dict | None = None, *, metadata: dict | None = None, broadcast: bool = False) -> int | None:
        e = env.step(self.svc, self.conv, step=step, status=status, title=title, agent=agent, data=data,
                     metadata=metadata)
        return await self._emit(e, broadcast)

    async def delta(self, text: str, index: int = 0, marker: str = "answer", agent: str | None = None,
                    completed: bool = False, *, format: str | None = None, artifact_name: str | None = None,
                    sub_type: str | None = None, metadata: dict | None = None, extra: dict | None = None,
                    broadcast: bool = False) -> int | None:
        """A streamed piece; `extra` adds keys to the envelope's `extra` (e.g. a canvas `title`)."""
        e = env.delta(self.svc, self.conv, text=text, index=index, marker=marker, agent=agent, completed=completed,
                      format=format, artifact_name=artifact_name, sub_type=sub_type, metadata=metadata, extra=extra)
        return await self._emit(e, broadcast)

    async def complete(self, data: dict | None = None, *, agent: str | None = None,
                       broadcast: bool = False) -> int | None:
        return await self._emit(env.complete(self.svc, self.conv, data=data, agent=agent), broadcast)

    async def error(self, message: str, agent: str | None = None, step: str | None = None, title: str | None = None,
                    *, data: dict | None = None, broadcast: bool = False) -> int | None:
        e = env.error(self.svc, self.conv, message=message, agent=agent, step=step, title=title, data=data)
        return await self._emit(e, broadcast)

    async def event(self, type: str, step: str | None = None, status: str | None = None, title: str | None = None,
                    data: dict | None = None, route: str | None = None, agent: str | None = None,
                    *, broadcast: bool = False) -> int | None:
        """A typed card (e.g. `chat.followups`); travels as `chat_step`."""
        e = env.typed(self.svc, self.conv, type=type, step=step, status=status, title=title, agent=agent,
                      data=data, route=route)
        return await self._emit(e, broadcast)

    async def service_event(self, type: str, data: dict | None = None, *, broadcast: bool = False) -> int | None:
        """Gateway/queue notices (`chat_service`)."""
        return await self._emit(env.service(self.svc, self.conv, type=type, data=data), broadcast)

    async def conv_status(self, *, state: str, updated_at: float, current_turn_id: str | None,
                          completion: str | None, origin_stream_id: str | None,
                          broadcast: bool = True) -> int | None:
        e = env.conv_status(self.svc, self.conv, state=state, updated_at=updated_at, current_turn_id=current_turn_id,
                            completion=completion, origin_stream_id=origin_stream_id)
        return await self._emit(e, broadcast)

    async def project_event(self, type: str, data: dict | None = None) -> int | None:
        """A typed event for every project-wide listener of this tenant/project."""
        if self._project_key is None:
            self._project_key = SessionKey.project_wide(self.key.tenant, self.key.project)
        e = env.typed(self.svc, self.conv, type=type, data=data)
        if not self._allowed(e, True):
            return None
        return await self._send(self._project_key, env.socket_event_for(e), e, None)

    async def flush(self) -> None:
        """Wait until every event emitted so far is published. Through Redis a turn's events are
        pipelined: an emit returns (with None for its seq) before Redis has it, and an error
        surfaces at a later emit or here; the runner flushes when the bundle returns, so a bundle
        needs this only to know, mid-turn, that what it sent is out (its envelopes' `seq` is set)."""
        if self.poster is not None:
            await self.poster.flush()

    def end_pipelining(self) -> Poster | None:
        """Stop posting through the poster (the runner, at the end of a bundle run); its
        confirmed events count as emitted. Returns it, for a last flush."""
        poster, self.poster = self.poster, None
        if poster is not None:
            self.emitted += poster.confirmed
        return poster

    # ---- plumbing ------------------------------------------------------------------------
    def _allowed(self, envelope: dict, broadcast: bool) -> bool:
        if self._filter is None:
            return True
        ev = envelope.get("event") or {}
        view = {"type": envelope.get("type"), "route": envelope.get("route"),
                "socket_event": env.socket_event_for(envelope), "agent": ev.get("agent"), "step": ev.get("step"),
                "status": ev.get("status"), "broadcast": broadcast}
        try:
            return bool(self._filter(self.svc.user_type, self.svc.user, view))
        except Exception:
            if not self._filter_failed_logged:
                self._filter_failed_logged = True
                log.exception("event filter raised; %s events it raises on",
                              "delivering" if self._fail_open else "suppressing")
            return self._fail_open

    async def _emit(self, envelope: dict, broadcast: bool) -> int | None:
        if not self._allowed(envelope, broadcast):
            return None
        target = None if broadcast or self.origin_sid is None else self.origin_sid
        if self.poster is not None:  # its events count once Redis confirmed them (see flush)
            return await self.poster.post(self.key, event=env.socket_event_for(envelope), data=envelope,
                                          target_sid=target)
        seq = await self._publish(self.key, event=env.socket_event_for(envelope), data=envelope, target_sid=target)
        self.emitted += 1
        return seq

    async def _send(self, key: SessionKey, event: str, data: dict, target: str | None) -> int | None:
        if self.poster is not None:
            return await self.poster.post(key, event=event, data=data, target_sid=target)
        return await self._publish(key, event=event, data=data, target_sid=target)


def load_event_filter(spec: str | None) -> EventFilter | None:
    if not spec:
        return None
    from kdc_trio.processor.bundle import load_object

    return load_object(spec)
