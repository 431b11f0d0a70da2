"""Which session a request belongs to: reuse, upgrade, or create — and who may not take one.

Rules (the same for SSE, chat posts and Socket.IO):
- `user_session_id` given: it must exist (else 401 "Unknown session"). A registered or
  privileged session belongs to its subject: another user's token, or no token, gets 403.
  An anonymous session presented with a valid token is upgraded to that user.
- No `user_session_id`: a token reuses the user's session in this tenant/project (so every
  connection of a user shares events), else a new session; no token makes a new anonymous one.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from kdc_trio.auth.identity import Identity
from kdc_trio.sessions.model import Session, UserType
from kdc_trio.sessions.store import SessionStore

# Session ids clients may send: bounded length, URL/channel-safe characters only.
MAX_SESSION_ID_LEN = 128
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class SessionError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


def safe_id(value: str, *, what: str) -> str:
    if not value or len(value) > MAX_SESSION_ID_LEN or not _SAFE.issuperset(value):
        raise SessionError(400, "bad_request", f"{what} must be 1-{MAX_SESSION_ID_LEN} of [A-Za-z0-9._-]")
    return value


def _with_identity(session: Session, identity: Identity) -> Session:
    return replace(session, user_type=identity.user_type, user_id=identity.subject,
                   username=identity.username, roles=identity.roles)


async def resolve_session(store: SessionStore, *, session_id: str | None, identity: Identity | None,
                          tenant: str, project: str) -> Session:
    if session_id:
        safe_id(session_id, what="user_session_id")
        session = await store.get(session_id)
        if session is None:
            raise SessionError(401, "unknown_session", "Unknown session")
        if session.user_id is not None:
            if identity is None:
                raise SessionError(403, "session_forbidden", "this session belongs to a signed-in user")
            if identity.subject != session.user_id:
                raise SessionError(403, "session_forbidden", "this session belongs to another user")
        if session.tenant != tenant or session.project != project:
            raise SessionError(403, "session_forbidden", "this session belongs to another tenant/project")
        if identity is not None:
            session = _with_identity(session, identity)
        session = session.seen()
        await store.put(session)
        return session
    if identity is not None:
        existing = await store.find_by_user(tenant, project, identity.subject)
        if existing is not None:
            session = _with_identity(existing, identity).seen()
            await store.put(session)
            return session
        session = _with_identity(Session(session_id=new_session_id(), user_type=UserType.REGISTERED,
                                         tenant=tenant, project=project), identity)
    else:
        session = Session(session_id=new_session_id(), user_type=UserType.ANONYMOUS, tenant=tenant, project=project)
    await store.put(session)
    return session
