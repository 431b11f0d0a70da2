"""CORS with an origin allow-list (`KDC_CORS_ORIGINS`); credentials allowed for cookie auth."""

from __future__ import annotations

from kdc_trio.server.connection import Exchange, Handler
from kdc_trio.server.request import Request

# Preflight answers may be cached this long by the browser (10 minutes: Chromium's cap).
PREFLIGHT_MAX_AGE_S = 600
ALLOWED_METHODS = "GET, POST, OPTIONS"


class CORS:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(origins)

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and (self.any or origin in self.origins)

    def headers(self, request: Request) -> list[tuple[str, str]]:
        """Headers added to every response of a request from an allowed origin."""
        origin = request.headers.get("origin")
        if not self.allows(origin):
            return []
        return [("access-control-allow-origin", origin or ""), ("access-control-allow-credentials", "true"),
                ("vary", "Origin")]

    def wrap(self, handler: Handler) -> Handler:
        """Answer preflight requests before routing; pass everything else on."""

        async def cors_handler(request: Request, ex: Exchange) -> None:
            if (request.method == "OPTIONS" and "access-control-request-method" in request.headers):
                if not self.allows(request.headers.get("origin")):
                    await ex.error(403, "cors_forbidden", "origin not allowed")
                    return
                await ex.respond(204, headers=[
                    ("access-control-allow-methods", ALLOWED_METHODS),
                    ("access-control-allow-headers",
                     request.headers.get("access-control-request-headers") or "content-type, authorization"),
                    ("access-control-max-age", str(PREFLIGHT_MAX_AGE_S)),
                ])
                return
            await handler(request, ex)

        return cors_handler
