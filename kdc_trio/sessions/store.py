"""Where sessions live: the interface, and the embedded in-memory store.

A Redis store (kdc_trio/sessions/redis_store.py) implements the same interface so any
gateway process resolves any session id with the same ownership rules.

The store also knows the live SSE streams (stream_id → the session and scope it is bound to),
so that a chat post that names its stream but presents no session finds the stream's session,
whichever gateway holds the stream. A binding carries a token: a stream that reconnects with
the same id rebinds it, and the old connection's release does not undo the new binding.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import NamedTuple

import trio

from kdc_trio.sessions.model import Session

# Sessions the memory store keeps at most; the least recently seen go first. Bounds memory
# against a flood of anonymous clients (each costs ~1 KiB).
MEMORY_STORE_MAX_SESSIONS = 200_000


class StreamBinding(NamedTuple):
    session_id: str
    tenant: str
    project: str


class RecoveryRecord(NamedTuple):
    """What a Socket.IO `pid` may resume: this session, as this user, on this stream."""

    session_id: str
    user_id: str | None
    stream_id: str
    seq: int  # the session's seq the socket was at when the pid was (re)issued


class SessionStore(ABC):
    ttl_s: float  # a session not written for this long is gone

    @abstractmethod
    async def get(self, session_id: str) -> Session | None: ...

    @abstractmethod
    async def put(self, session: Session) -> None: ...

    @abstractmethod
    async def find_by_user(self, tenant: str, project: str, user_id: str) -> Session | None:
        """The session already bound to this user in this tenant/project, if any."""

    @abstractmethod
    async def find_by_fingerprint(self, tenant: str, project: str, fingerprint: str) -> Session | None:
        """The anonymous session last made for this fingerprint in this tenant/project, if any."""

    @abstractmethod
    async def bind_stream(self, stream_id: str, binding: StreamBinding, token: str) -> None:
        """A live stream is bound to this session and scope (until released or the session TTL)."""

    @abstractmethod
    async def release_stream(self, stream_id: str, token: str) -> None:
        """The stream with this token ended (a newer binding of the same id is kept)."""

    @abstractmethod
    async def stream_binding(self, stream_id: str) -> StreamBinding | None: ...

    @abstractmethod
    async def put_recovery(self, pid: str, record: RecoveryRecord, ttl_s: int) -> None:
        """A Socket.IO private session id and what it may resume, for `ttl_s`."""

    @abstractmethod
    async def recovery(self, pid: str) -> RecoveryRecord | None: ...

    async def ping(self) -> bool:
        return True


def new_stream_token() -> str:
    return secrets.token_hex(8)


class MemorySessionStore(SessionStore):
    def __init__(self, *, ttl_s: float = 86400, max_sessions: int = MEMORY_STORE_MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._by_user: dict[tuple[str, str, str], str] = {}
        self._by_fp: dict[tuple[str, str, str], str] = {}  # dropped with their session
        self._streams: dict[str, tuple[str, StreamBinding]] = {}  # live streams only: bounded by them
        # pid -> (expiry, record); as many as sessions at most (the oldest go first)
        self._pids: OrderedDict[str, tuple[float, RecoveryRecord]] = OrderedDict()

    async def get(self, session_id: str) -> Session | None:
        await trio.lowlevel.checkpoint()
        s = self._by_id.get(session_id)
        if s is None:
            return None
        if time.time() - s.last_seen > self.ttl_s:
            self._drop(session_id)
            return None
        return s

    async def put(self, session: Session) -> None:
        await trio.lowlevel.checkpoint()
        self._by_id[session.session_id] = session
        self._by_id.move_to_end(session.session_id)
        if session.user_id:
            self._by_user[(session.tenant, session.project, session.user_id)] = session.session_id
        elif session.fingerprint:
            self._by_fp[(session.tenant, session.project, session.fingerprint)] = session.session_id
        while len(self._by_id) > self.max_sessions:
            old_id, _ = next(iter(self._by_id.items()))
            self._drop(old_id)

    async def find_by_user(self, tenant: str, project: str, user_id: str) -> Session | None:
        sid = self._by_user.get((tenant, project, user_id))
        return await self.get(sid) if sid else None

    async def find_by_fingerprint(self, tenant: str, project: str, fingerprint: str) -> Session | None:
        sid = self._by_fp.get((tenant, project, fingerprint))
        return await self.get(sid) if sid else None

    def _drop(self, session_id: str) -> None:
        s = self._by_id.pop(session_id, None)
        if s is not None and s.user_id:
            k = (s.tenant, s.project, s.user_id)
            if self._by_user.get(k) == session_id:
                del self._by_user[k]
        if s is not None and s.fingerprint:
            fk = (s.tenant, s.project, s.fingerprint)
            if self._by_fp.get(fk) == session_id:
                del self._by_fp[fk]

    async def bind_stream(self, stream_id: str, binding: StreamBinding, token: str) -> None:
        await trio.lowlevel.checkpoint()
        self._streams[stream_id] = (token, binding)

    async def release_stream(self, stream_id: str, token: str) -> None:
        await trio.lowlevel.checkpoint()
        if self._streams.get(stream_id, ("",))[0] == token:
            del self._streams[stream_id]

    async def stream_binding(self, stream_id: str) -> StreamBinding | None:
        await trio.lowlevel.checkpoint()
        entry = self._streams.get(stream_id)
        return entry[1] if entry is not None else None

    async def put_recovery(self, pid: str, record: RecoveryRecord, ttl_s: int) -> None:
        await trio.lowlevel.checkpoint()
        self._pids[pid] = (time.monotonic() + ttl_s, record)
        self._pids.move_to_end(pid)
        while len(self._pids) > self.max_sessions:
            self._pids.popitem(last=False)

    async def recovery(self, pid: str) -> RecoveryRecord | None:
        await trio.lowlevel.checkpoint()
        entry = self._pids.get(pid)
        if entry is None or entry[0] < time.monotonic():
            self._pids.pop(pid, None)
            return None
        return entry[1]
