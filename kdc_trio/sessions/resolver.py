"""Which session a request belongs to: reuse, upgrade, or create — and who may not take one.

Rules (the same for SSE, chat posts, REST and Socket.IO):
- `user_session_id` given: it must exist (else 401 "Unknown session"). A registered or
  privileged session belongs to its subject: another user's token, or no token, gets 403.
  An anonymous session presented with a valid token is upgraded to that user only by its holder:
  the request also carries the sticky session cookie naming it (the browser that made it), or
  the deployment opted in to KDCube's rule that its id alone suffices (`KDC_ANON_UPGRADE_BY_ID=1`);
  otherwise 403 (a stranger who learned the id cannot take the session and lock its owner out).
- No `user_session_id`: the implicit candidates are tried in order (the live stream a chat post
  names, then the sticky session cookie): one is taken when it exists and fits the caller (an
  anonymous session for a caller without a token; the caller's own session for a token), and
  is otherwise passed over silently, never refused. Else a token reuses the user's session in
  this tenant/project (so every connection of a user shares events), else a new session; no token
  makes a new anonymous one (with `KDC_ANON_FINGERPRINT=1`, KDCube's: the anonymous session of the
  same client address + User-Agent, if one exists).

Tenant and project (KDCube's model: a session belongs to the deployment; a connection names the
tenant/project it works in): a session is created in the tenant/project its first request
named (or the defaults) and keeps that as its home. A request that names none works in the
session's home; one that names others works there, with the same session (the result is a
view with those tenant/project; the stored session is unchanged). Never a 403 for it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from typing import Sequence

from kdc_trio.auth.identity import Identity
from kdc_trio.errors import ClientError
from kdc_trio.sessions.model import Session, UserType
from kdc_trio.sessions.store import SessionStore

# A request that changes nothing in its session but its last-seen time rewrites it (and so
# refreshes its TTL) at most this often: a chat turn does not cost a session write through Redis
# when the stream that carries its events was opened seconds ago. A TTL measured from the last
# write is then at most this much shorter than one measured from the last request.
SEEN_REFRESH_S = 60.0


def seen_refresh_s(store: SessionStore) -> float:
    """The refresh interval for this store: SEEN_REFRESH_S, or 1 % of a shorter TTL."""
    return min(SEEN_REFRESH_S, store.ttl_s / 100)


# Session ids clients may send: bounded length, URL/channel-safe characters only.
MAX_SESSION_ID_LEN = 128
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class SessionError(ClientError):
    """A session (or an id naming one) refused: 400 bad id, 401 unknown session, 403 not yours."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(status, error, detail, message=detail)


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
                          tenant: str | None, project: str | None, default_tenant: str = "home",
                          default_project: str = "demo", candidates: Sequence[str] = (),
                          fingerprint: str | None = None, holder: bool = True) -> Session:
    """The caller's session; `tenant`/`project` None = not named by the request (see module doc)."""
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
        elif identity is not None and not holder:
            raise SessionError(403, "session_forbidden", "an anonymous session is taken over by a token only with "
                               "its session cookie (KDC_ANON_UPGRADE_BY_ID=1: by its id alone)")
        return await _reuse(store, session, identity, tenant, project)
    for candidate in candidates:
        session = await store.get(candidate)
        if session is not None and _fits(session, identity):
            return await _reuse(store, session, identity, tenant, project)
    tenant, project = tenant or default_tenant, project or default_project
    if identity is not None:
        existing = await store.find_by_user(tenant, project, identity.subject)
        if existing is not None:
            return await _reuse(store, existing, identity, tenant, project)
        session = _with_identity(Session(session_id=new_session_id(), user_type=UserType.REGISTERED,
                                         tenant=tenant, project=project), identity)
    else:
        if fingerprint:
            existing = await store.find_by_fingerprint(tenant, project, fingerprint)
            if existing is not None and existing.user_id is None:
                return await _reuse(store, existing, None, tenant, project)
        session = Session(session_id=new_session_id(), user_type=UserType.ANONYMOUS, tenant=tenant, project=project,
                          fingerprint=fingerprint)
    await store.put(session)
    return session


def _fits(session: Session, identity: Identity | None) -> bool:
    """An implicit candidate is taken only by whom it already belongs to."""
    if identity is None:
        return session.user_id is None
    return session.user_id == identity.subject


async def _reuse(store: SessionStore, session: Session, identity: Identity | None, tenant: str | None,
                 project: str | None) -> Session:
    updated = _with_identity(session, identity) if identity is not None else session
    if updated != session or time.time() - session.last_seen >= seen_refresh_s(store):
        session = updated.seen()
        await store.put(session)
    if (tenant or session.tenant, project or session.project) != (session.tenant, session.project):
        session = replace(session, tenant=tenant or session.tenant, project=project or session.project)
    return session
