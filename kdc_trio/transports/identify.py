"""Who is asking, and which session they get: shared by SSE, chat posts, REST and Socket.IO.

Every refusal here is a `ClientError` (an `AuthError` 401, a `SessionError` 400/401/403, or a
plain one); the transports render it, nobody translates it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping

from kdc_trio.auth.identity import Identity
from kdc_trio.auth.sources import extract_tokens
from kdc_trio.errors import ClientError
from kdc_trio.server import Request
from kdc_trio.sessions.model import Session
from kdc_trio.sessions.resolver import resolve_session, safe_id

if TYPE_CHECKING:
    from kdc_trio.config import Settings
    from kdc_trio.ports import IdentifyPorts


# A session cookie we set holds a session id; anything else in it is ignored.
_SAFE_COOKIE = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def identify(gw: "IdentifyPorts", *, headers: Mapping[str, str], cookies: Mapping[str, str],
             query: Mapping[str, str] | None = None, sio_auth: Mapping[str, Any] | None = None,
             reject_anonymous: bool) -> Identity | None:
    tokens = extract_tokens(gw.settings, headers=headers, cookies=cookies, query=query, sio_auth=sio_auth)
    identity = gw.authenticator.authenticate(tokens)
    if identity is None and reject_anonymous:
        raise ClientError(401, "authentication_required", "a token is required (anonymous access is disabled)")
    return identity


def tenant_project(params: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The tenant/project a request names (None: it names none, see sessions/resolver.py)."""
    return tuple(safe_id(str(params[k]), what=k) if params.get(k) else None  # type: ignore[return-value]
                 for k in ("tenant", "project"))


async def session_for(gw: "IdentifyPorts", **kw: Any) -> Session:
    """The caller's session (`session_and_identity` without the identity)."""
    return (await session_and_identity(gw, **kw))[0]


async def session_and_identity(gw: "IdentifyPorts", *, headers: Mapping[str, str], cookies: Mapping[str, str],
                               params: Mapping[str, Any], query: Mapping[str, str] | None = None,
                               sio_auth: Mapping[str, Any] | None = None, reject_anonymous: bool,
                               stream_id: str | None = None, use_cookie: bool = False,
                               client: str | None = None) -> tuple[Session, Identity | None]:
    """Authenticate, then reuse / upgrade / create the session (`params` holds user_session_id,
    tenant, project: the SSE query or the Socket.IO auth payload). A chat post names its
    `stream_id`: without a session id it gets that live stream's session when the caller fits it,
    and works in the stream's tenant/project unless it names its own; `use_cookie` lets the sticky
    session cookie stand in for a missing session id (sessions/resolver.py says who may take what)."""
    identity = identify(gw, headers=headers, cookies=cookies, query=query, sio_auth=sio_auth,
                        reject_anonymous=reject_anonymous)
    tenant, project = tenant_project(params)
    sid = params.get("user_session_id")
    if sid is not None and not isinstance(sid, str):
        raise ClientError(400, "bad_request", "user_session_id must be a string")
    s = gw.settings
    # The stream's binding matters when it may give the session or the scope: not for a post that
    # names both (one store read fewer per post).
    wanted = stream_id and (not sid or (tenant is None and project is None))
    binding = await gw.store.stream_binding(stream_id) if wanted else None
    candidates = []
    if not sid:
        if binding is not None:
            candidates.append(binding.session_id)
        cookie = cookies.get(s.session_cookie) if use_cookie and s.session_cookie else None
        if cookie and _SAFE_COOKIE.fullmatch(cookie):
            candidates.append(cookie)
    session = await resolve_session(gw.store, session_id=sid or None, identity=identity, tenant=tenant,
                                    project=project, default_tenant=s.default_tenant,
                                    default_project=s.default_project, candidates=candidates,
                                    fingerprint=fingerprint(headers, client) if s.anon_fingerprint else None,
                                    holder=s.anon_upgrade_by_id or bool(sid and s.session_cookie
                                                                         and cookies.get(s.session_cookie) == sid))
    if binding is not None and binding.session_id == session.session_id and tenant is None and project is None:
        session = replace(session, tenant=binding.tenant, project=binding.project)
    return session, identity


def fingerprint(headers: Mapping[str, str], client: str | None) -> str:
    """KDCube's anonymous fingerprint: sha256 of `<client ip>:<user agent>`, 16 hex digits."""
    ip = (client or "").rsplit(":", 1)[0]
    return hashlib.sha256(f"{ip}:{headers.get('user-agent', '')}".encode()).hexdigest()[:16]


def session_cookie(settings: "Settings", session: Session, req: Request | None = None) -> list[tuple[str, str]]:
    """The `Set-Cookie` header that makes `session` sticky for this browser (none when disabled):
    always `HttpOnly`, `SameSite` as set (Lax), and `Secure` when set so or when the request came
    over TLS (a trusted proxy's `X-Forwarded-Proto: https`, `KDC_TRUST_FORWARDED_PROTO=1`)."""
    if not settings.session_cookie:
        return []
    from kdc_trio.server.cors import request_scheme

    attrs = [f"{settings.session_cookie}={session.session_id}", "Path=/", "HttpOnly",
             f"Max-Age={settings.session_ttl_s}", f"SameSite={settings.session_cookie_samesite}"]
    if settings.session_cookie_secure or (
            req is not None and request_scheme(req, settings.trust_forwarded_proto) == "https"):
        attrs.append("Secure")
    return [("set-cookie", "; ".join(attrs))]


def stream_id_from(value: Any, *, what: str = "stream_id") -> str:
    if not isinstance(value, str):
        raise ClientError(400, "bad_request", f"{what} must be a string")
    return safe_id(value, what=what)


async def request_session(gw: "IdentifyPorts", req: Request, *, stream_id: str | None = None,
                          use_cookie: bool = True) -> Session:
    return (await request_session_and_identity(gw, req, stream_id=stream_id, use_cookie=use_cookie))[0]


async def request_session_and_identity(gw: "IdentifyPorts", req: Request, *, stream_id: str | None = None,
                                       use_cookie: bool = True) -> tuple[Session, Identity | None]:
    return await session_and_identity(gw, headers=req.headers.as_dict(), cookies=req.cookies, params=req.query,
                                      query=req.query, reject_anonymous=gw.settings.sse_reject_anonymous,
                                      stream_id=stream_id, use_cookie=use_cookie, client=req.client)
