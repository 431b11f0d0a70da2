"""CORS with an origin allow-list (`cors_origins`): an allowed origin gets itself back with
credentials on every response (errors too), preflights are answered before routing, and any
other origin gets no CORS header at all."""

from __future__ import annotations

from kdc_trio.server import Router
from tests.server.raw import exchange, get, serving

APP = "https://app.example"


def router() -> Router:
    r = Router()

    async def hello(req, ex):
        await ex.json(200, {"ok": True})

    r.add("GET POST", "/hello", hello)
    return r


def preflight(origin: str, headers: str = "") -> bytes:
    return (f"OPTIONS /hello HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n"
            f"Access-Control-Request-Method: POST\r\n{headers}\r\n").encode()


async def test_an_allowed_origin_gets_itself_back_with_credentials():
    async with serving(router(), cors_origins=(APP, "https://other.example")) as (_, port):
        allowed = await exchange(port, get("/hello", f"Origin: {APP}\r\n"))
        allowed_error = await exchange(port, get("/missing", f"Origin: {APP}\r\n"))
    for r in (allowed, allowed_error):
        assert r.headers["access-control-allow-origin"] == APP
        assert r.headers["access-control-allow-credentials"] == "true"
        assert "Origin" in r.headers["vary"]
    assert allowed.status == 200 and allowed_error.status == 404


async def test_a_preflight_is_answered_with_the_allowed_methods_and_headers():
    async with serving(router(), cors_origins=(APP,)) as (_, port):
        r = await exchange(port, preflight(APP, "Access-Control-Request-Headers: content-type, x-id-token\r\n"))
    assert r.status == 204 and r.body == b""
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["access-control-allow-credentials"] == "true"
    assert {"GET", "POST", "OPTIONS"} <= {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    assert {"content-type", "x-id-token"} <= {h.strip() for h in r.headers["access-control-allow-headers"].split(",")}
    assert int(r.headers["access-control-max-age"]) > 0


async def test_another_origin_gets_no_cors_headers():
    async with serving(router(), cors_origins=(APP,)) as (_, port):
        other = await exchange(port, get("/hello", "Origin: https://evil.example\r\n"))
        other_preflight = await exchange(port, preflight("https://evil.example"))
        no_origin = await exchange(port, get("/hello"))
    assert other.status == 200 and no_origin.status == 200
    assert other_preflight.status == 403 and other_preflight.json()["error"] == "cors_forbidden"
    for r in (other, other_preflight, no_origin):
        assert not [h for h in r.headers if h.startswith("access-control-")], r.headers


async def test_a_wildcard_allows_any_origin_without_credentials():
    async with serving(router(), cors_origins=("*",)) as (_, port):
        r = await exchange(port, get("/hello", "Origin: https://anything.example\r\n"))
    assert r.headers["access-control-allow-origin"] == "*", "any origin, never with credentials"
    assert "access-control-allow-credentials" not in r.headers
