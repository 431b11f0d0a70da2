"""Sessions in Redis: one hash per session, TTL refreshed on activity, a user index beside it.

Any gateway resolves any session id with the same ownership rules as the memory store
(kdc_trio/sessions/resolver.py applies them; this only stores). Keys:
`<prefix>:session:<id>` (hash: the session's fields, roles as JSON) and
`<prefix>:session_user:<tenant>:<project>:<user_id>` (the bound session id). Both expire
`KDC_SESSION_TTL_S` after the session was last put.
"""

from __future__ import annotations

import json

from kdc_trio.redis.commands import Commands, text, transaction
from kdc_trio.sessions.model import Session
from kdc_trio.sessions.store import SessionStore


class RedisSessionStore(SessionStore):
    def __init__(self, redis: Commands, *, prefix: str = "kdc", ttl_s: int = 86400) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = int(ttl_s)

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    def _user_key(self, tenant: str, project: str, user_id: str) -> str:
        return f"{self.prefix}:session_user:{tenant}:{project}:{user_id}"

    async def get(self, session_id: str) -> Session | None:
        raw = await self.redis.execute("HGETALL", self._key(session_id))
        if not raw:
            return None
        fields = {text(raw[i]): text(raw[i + 1]) for i in range(0, len(raw), 2)}
        d: dict = dict(fields)
        d["roles"] = json.loads(fields.get("roles") or "[]")
        return Session.from_dict(d)

    async def put(self, session: Session) -> None:
        d = session.to_dict()
        mapping: list[str] = []
        for k, v in d.items():
            if v is None:
                continue
            mapping += [k, json.dumps(v) if k == "roles" else str(v)]
        key = self._key(session.session_id)
        cmds: list[tuple] = [("DEL", key), ("HSET", key, *mapping), ("EXPIRE", key, self.ttl_s)]
        if session.user_id:
            cmds.append(("SET", self._user_key(session.tenant, session.project, session.user_id),
                         session.session_id, "EX", self.ttl_s))
        await transaction(self.redis, cmds)

    async def find_by_user(self, tenant: str, project: str, user_id: str) -> Session | None:
        sid = await self.redis.execute("GET", self._user_key(tenant, project, user_id))
        return await self.get(text(sid)) if sid else None

    async def ping(self) -> bool:
        try:
            return text(await self.redis.execute("PING")) == "PONG"
        except Exception:
            return False
