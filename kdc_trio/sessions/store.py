"""Where sessions live: the interface, and the embedded in-memory store.

A Redis store (kdc_trio/sessions/redis_store.py) implements the same interface so any
gateway process resolves any session id with the same ownership rules.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict

import trio

from kdc_trio.sessions.model import Session

# Sessions the memory store keeps at most; the least recently seen go first. Bounds memory
# against a flood of anonymous clients (each costs ~1 KiB).
MEMORY_STORE_MAX_SESSIONS = 200_000


class SessionStore(ABC):
    @abstractmethod
    async def get(self, session_id: str) -> Session | None: ...

    @abstractmethod
    async def put(self, session: Session) -> None: ...

    @abstractmethod
    async def find_by_user(self, tenant: str, project: str, user_id: str) -> Session | None:
        """The session already bound to this user in this tenant/project, if any."""

    async def ping(self) -> bool:
        return True


class MemorySessionStore(SessionStore):
    def __init__(self, *, ttl_s: float = 86400, max_sessions: int = MEMORY_STORE_MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._by_user: dict[tuple[str, str, str], str] = {}

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
        while len(self._by_id) > self.max_sessions:
            old_id, _ = next(iter(self._by_id.items()))
            self._drop(old_id)

    async def find_by_user(self, tenant: str, project: str, user_id: str) -> Session | None:
        sid = self._by_user.get((tenant, project, user_id))
        return await self.get(sid) if sid else None

    def _drop(self, session_id: str) -> None:
        s = self._by_id.pop(session_id, None)
        if s is not None and s.user_id:
            k = (s.tenant, s.project, s.user_id)
            if self._by_user.get(k) == session_id:
                del self._by_user[k]
