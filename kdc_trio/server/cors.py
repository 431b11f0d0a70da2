"""Origins: CORS with an allow-list (`KDC_CORS_ORIGINS`) and the cross-site refusals.

Who is "foreign": a request whose `Origin` header is neither the gateway's own origin
(`<scheme>://<Host>`, the scheme from `X-Forwarded-Proto` only when `KDC_TRUST_FORWARDED_PROTO=1`)
nor listed by name in `KDC_CORS_ORIGINS`. A request without `Origin` (curl, servers, native
clients) is not cross-site. An empty list therefore means same-origin only.

- CORS headers: a listed origin gets itself back with `Access-Control-Allow-Credentials: true`;
  under `*` any other origin gets `Access-Control-Allow-Origin: *` and never credentials.
- A request carrying one of the gateway's cookies (access token, ID token, sticky session) from a
  foreign origin is refused 403 `cross_site_forbidden` before routing, whatever its method: `*`
  never lets cookies act cross-site (stream opens, chat posts, conv_status.get, auth.refresh …).
- Handshakes browsers do not guard (Engine.IO polling and WebSocket, `guarded_prefixes`) from a
  foreign origin are refused 403 `origin_forbidden` unless the list holds `*`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Iterable

from kdc_trio.errors import ClientError
from kdc_trio.server.connection import Exchange, Handler
from kdc_trio.server.request import Request

if TYPE_CHECKING:
    from kdc_trio.config import Settings

# Preflight answers may be cached this long by the browser (10 minutes: Chromium's cap).
PREFLIGHT_MAX_AGE_S = 600
ALLOWED_METHODS = "GET, POST, OPTIONS"


def request_scheme(request: Request, trust_forwarded_proto: bool) -> str:
    """`https` when a trusted proxy says the client came over TLS; the server itself speaks http."""
    if trust_forwarded_proto:
        proto = (request.headers.get("x-forwarded-proto") or "").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            return proto
    return "http"


class CORS:
    def __init__(self, origins: tuple[str, ...], *, cookie_names: Iterable[str] = (),
                 trust_forwarded_proto: bool = False, guarded_prefixes: tuple[str, ...] = ()) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o for o in origins if o != "*")
        self.cookie_names = frozenset(n for n in cookie_names if n)
        self.trust_forwarded_proto = trust_forwarded_proto
        self.guarded_prefixes = guarded_prefixes

    @classmethod
    def from_settings(cls, s: "Settings", *, guarded_prefixes: tuple[str, ...] = ()) -> "CORS":
        return cls(s.cors_origins, cookie_names=(s.auth_token_cookie, s.id_token_cookie, s.session_cookie),
                   trust_forwarded_proto=s.trust_forwarded_proto, guarded_prefixes=guarded_prefixes)

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and (self.any or origin in self.origins)

    def same_origin(self, request: Request, origin: str) -> bool:
        host = request.headers.get("host")
        return bool(host) and origin.lower() == f"{request_scheme(request, self.trust_forwarded_proto)}://{host}".lower()

    def foreign(self, request: Request) -> bool:
        """Cross-site: an `Origin` that is neither ours nor listed by name (see module doc)."""
        origin = request.headers.get("origin")
        return origin is not None and origin not in self.origins and not self.same_origin(request, origin)

    def headers(self, request: Request) -> list[tuple[str, str]]:
        """Headers added to every response of a request from an allowed origin."""
        origin = request.headers.get("origin")
        if origin and origin in self.origins:
            return [("access-control-allow-origin", origin), ("access-control-allow-credentials", "true"),
                    ("vary", "Origin")]
        if origin and self.any:
            return [("access-control-allow-origin", "*"), ("vary", "Origin")]  # never with credentials
        return []

    def refusal(self, request: Request) -> ClientError | None:
        """Why a cross-site request is refused before routing (None: it is not)."""
        if not self.foreign(request):
            return None
        if self.cookie_names and self.cookie_names.intersection(request.cookies):
            return ClientError(403, "cross_site_forbidden",
                               "a request carrying the gateway's cookies from a foreign origin is refused "
                               "(list the origin in KDC_CORS_ORIGINS)", limit="KDC_CORS_ORIGINS")
        if not self.any and request.path.startswith(self.guarded_prefixes):
            return ClientError(403, "origin_forbidden", "this origin is not in KDC_CORS_ORIGINS",
                               limit="KDC_CORS_ORIGINS")
        return None

    def wrap(self, handler: Handler) -> Handler:
        """Answer preflight requests and refuse cross-site ones before routing; pass the rest on."""

        def cors_handler(request: Request, ex: Exchange) -> Awaitable[None]:
            # Returns the awaitable rather than awaiting it: no frame of this wrapper stays on an
            # idle stream's stack for hours (a refusal raises here, in the caller's `await`).
            if (request.method == "OPTIONS" and "access-control-request-method" in request.headers):
                if not self.allows(request.headers.get("origin")):
                    return ex.error(403, "cors_forbidden", "origin not allowed")
                return ex.respond(204, headers=[
                    ("access-control-allow-methods", ALLOWED_METHODS),
                    ("access-control-allow-headers",
                     request.headers.get("access-control-request-headers") or "content-type, authorization"),
                    ("access-control-max-age", str(PREFLIGHT_MAX_AGE_S)),
                ])
            refused = self.refusal(request)
            if refused is not None:
                raise refused
            return handler(request, ex)

        return cors_handler
