"""The demo page: `GET /` and its script and style under `/demo/`, served from package data.

Three static files (kdc_trio/web/), read once at install. The page loads nothing from anywhere
else, and its Content-Security-Policy says so to the browser. `KDC_DEMO_PAGE=0` installs no
route: `/` is then a 404 like any unknown path.
"""

from __future__ import annotations

from importlib import resources

from kdc_trio.server import Exchange, Request, Router

FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/demo/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/demo/style.css": ("style.css", "text/css; charset=utf-8"),
}
HEADERS = [
    ("cache-control", "no-cache"),
    ("x-content-type-options", "nosniff"),
    ("content-security-policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
     "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
]


def install(router: Router) -> None:
    web = resources.files("kdc_trio") / "web"
    for path, (name, content_type) in FILES.items():
        body = (web / name).read_bytes()
        router.add("GET", path, _serve(body, content_type))


def _serve(body: bytes, content_type: str):
    async def handler(req: Request, ex: Exchange) -> None:
        await ex.respond(200, body, content_type=content_type, headers=HEADERS)

    return handler
