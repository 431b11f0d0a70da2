"""Sessions in Redis: one hash per session, TTL refreshed on activity, a user index beside it.

Any gateway resolves any session id with the same ownership rules as the memory store
(kdc_trio/sessions/resolver.py applies them; this only stores). Keys:
`<prefix>:session:<id>` (hash: the session's fields, roles as JSON) and
`<prefix>:session_user:<tenant>:<project>:<user_id>` (the bound session id). Both expire
`KDC_SESSION_TTL_S` after the session was last put. A live SSE stream's binding is
`<prefix>:stream:<stream_id>` (JSON `{token, session_id, tenant, project}`), deleted when the
stream ends (only by the connection that set it) and expiring with the session TTL otherwise.
A Socket.IO recovery pid is `<prefix>:sio_pid:<pid>` (JSON `{session_id, user_id, stream_id, seq}`),
expiring with the session log (`KDC_SESSION_LOG_TTL_S`).
"""

from __future__ import annotations

import json

from kdc_trio.redis.commands import Commands, Script, text
from kdc_trio.sessions.model import Session
from kdc_trio.sessions.store import RecoveryRecord, SessionStore, StreamBinding

# KEYS[1] the stream binding; ARGV[1] the releasing connection's token. Deletes only its own.
RELEASE_STREAM = Script("""
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur).token == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
""")


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
        # The session's hash is replaced atomically (MULTI … EXEC); the index that finds it by
        # user or fingerprint is written after it in the same round trip, outside the
        # transaction: under Redis Cluster the index key lives in another slot. An index
        # therefore never names a session that was not written.
        cmds: list[tuple] = [("MULTI",), ("DEL", key), ("HSET", key, *mapping), ("EXPIRE", key, self.ttl_s),
                             ("EXEC",)]
        if session.user_id:
            cmds.append(("SET", self._user_key(session.tenant, session.project, session.user_id),
                         session.session_id, "EX", self.ttl_s))
        elif session.fingerprint:
            cmds.append(("SET", self._fp_key(session.tenant, session.project, session.fingerprint),
                         session.session_id, "EX", self.ttl_s))
        for reply in await self.redis.pipeline(cmds):
            if isinstance(reply, Exception):
                raise reply

    def _fp_key(self, tenant: str, project: str, fingerprint: str) -> str:
        return f"{self.prefix}:session_fp:{tenant}:{project}:{fingerprint}"

    async def find_by_fingerprint(self, tenant: str, project: str, fingerprint: str) -> Session | None:
        sid = await self.redis.execute("GET", self._fp_key(tenant, project, fingerprint))
        return await self.get(text(sid)) if sid else None

    async def find_by_user(self, tenant: str, project: str, user_id: str) -> Session | None:
        sid = await self.redis.execute("GET", self._user_key(tenant, project, user_id))
        return await self.get(text(sid)) if sid else None

    def _stream_key(self, stream_id: str) -> str:
        return f"{self.prefix}:stream:{stream_id}"

    async def bind_stream(self, stream_id: str, binding: StreamBinding, token: str) -> None:
        value = json.dumps({"token": token, **binding._asdict()})
        await self.redis.execute("SET", self._stream_key(stream_id), value, "EX", self.ttl_s)

    async def release_stream(self, stream_id: str, token: str) -> None:
        await RELEASE_STREAM.run(self.redis, keys=[self._stream_key(stream_id)], args=[token])

    async def stream_binding(self, stream_id: str) -> StreamBinding | None:
        raw = await self.redis.execute("GET", self._stream_key(stream_id))
        if not raw:
            return None
        d = json.loads(text(raw))
        return StreamBinding(d["session_id"], d["tenant"], d["project"])

    async def put_recovery(self, pid: str, record: RecoveryRecord, ttl_s: int) -> None:
        await self.redis.execute("SET", f"{self.prefix}:sio_pid:{pid}", json.dumps(record._asdict()), "EX", int(ttl_s))

    async def recovery(self, pid: str) -> RecoveryRecord | None:
        raw = await self.redis.execute("GET", f"{self.prefix}:sio_pid:{pid}")
        if not raw:
            return None
        d = json.loads(text(raw))
        return RecoveryRecord(d["session_id"], d.get("user_id"), d["stream_id"], int(d.get("seq") or 0))

    async def ping(self) -> bool:
        try:
            return text(await self.redis.execute("PING")) == "PONG"
        except Exception:
            return False
