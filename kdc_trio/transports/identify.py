"""Who is asking, and which session they get: shared by SSE, chat posts, REST and Socket.IO."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from kdc_trio.auth.errors import AuthError
from kdc_trio.auth.identity import Identity
from kdc_trio.auth.sources import extract_tokens
from kdc_trio.sessions.model import Session
from kdc_trio.server import HTTPError, Request
from kdc_trio.sessions.resolver import SessionError, resolve_session, safe_id

if TYPE_CHECKING:
    from kdc_trio.ports import IdentifyPorts
    from kdc_trio.processor.submit import TurnRefused


class Refused(Exception):
    """The request cannot be served as this caller: status, error code, detail."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


def identify(gw: "IdentifyPorts", *, headers: Mapping[str, str], cookies: Mapping[str, str],
             query: Mapping[str, str] | None = None, sio_auth: Mapping[str, Any] | None = None,
             reject_anonymous: bool) -> Identity | None:
    try:
        tokens = extract_tokens(gw.settings, headers=headers, cookies=cookies, query=query, sio_auth=sio_auth)
        identity = gw.authenticator.authenticate(tokens)
    except AuthError as exc:
        raise Refused(401, exc.reason, exc.detail or "the token was rejected") from None
    if identity is None and reject_anonymous:
        raise Refused(401, "authentication_required", "a token is required (anonymous access is disabled)")
    return identity


def tenant_project(gw: "IdentifyPorts", params: Mapping[str, Any]) -> tuple[str, str]:
    try:
        tenant = safe_id(str(params.get("tenant") or gw.settings.default_tenant), what="tenant")
        project = safe_id(str(params.get("project") or gw.settings.default_project), what="project")
    except SessionError as exc:
        raise Refused(exc.status, exc.error, exc.detail) from None
    return tenant, project


async def session_for(gw: "IdentifyPorts", *, headers: Mapping[str, str], cookies: Mapping[str, str],
                      params: Mapping[str, Any], query: Mapping[str, str] | None = None,
                      sio_auth: Mapping[str, Any] | None = None, reject_anonymous: bool) -> Session:
    """Authenticate, then reuse / upgrade / create the session (`params` holds user_session_id,
    tenant, project: the SSE query or the Socket.IO auth payload)."""
    identity = identify(gw, headers=headers, cookies=cookies, query=query, sio_auth=sio_auth,
                        reject_anonymous=reject_anonymous)
    tenant, project = tenant_project(gw, params)
    sid = params.get("user_session_id")
    if sid is not None and not isinstance(sid, str):
        raise Refused(400, "bad_request", "user_session_id must be a string")
    try:
        return await resolve_session(gw.store, session_id=sid or None, identity=identity, tenant=tenant,
                                     project=project)
    except SessionError as exc:
        raise Refused(exc.status, exc.error, exc.detail) from None


def stream_id_from(value: Any, *, what: str = "stream_id") -> str:
    if not isinstance(value, str):
        raise Refused(400, "bad_request", f"{what} must be a string")
    try:
        return safe_id(value, what=what)
    except SessionError as exc:
        raise Refused(exc.status, exc.error, exc.detail) from None


def refused(exc: Refused | "TurnRefused") -> HTTPError:
    headers = []
    if exc.status == 401:
        headers.append(("www-authenticate", 'Bearer realm="kdc-trio"'))
    retry = getattr(exc, "retry_after", None)
    if retry:
        headers.append(("retry-after", str(retry)))
    return HTTPError(exc.status, exc.error, exc.detail, headers=headers)


async def request_session(gw: "IdentifyPorts", req: Request) -> Session:
    try:
        return await session_for(gw, headers=req.headers.as_dict(), cookies=req.cookies, params=req.query,
                                 query=req.query, reject_anonymous=gw.settings.sse_reject_anonymous)
    except Refused as exc:
        raise refused(exc) from None
