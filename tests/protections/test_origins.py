"""Origins and cross-site requests, with real clients against a running gateway: Engine.IO
handshakes (polling, websocket) check Origin against KDC_CORS_ORIGINS; a request carrying the
gateway's cookies from a foreign origin is refused (stream opens and state-changing posts);
`*` never comes with credentials; the session cookie's flags; /metrics behind its token."""

from __future__ import annotations

import httpx

from kdc_trio.auth.mint import mint_token
from tests.support.gateway import running_gateway, test_settings
from tests.support.sio_client import run_sio

APP = "https://app.example"
EVIL = "https://evil.example"


def tok(sub: str) -> str:
    return mint_token(test_settings(), subject=sub, ttl_s=600)


async def noop(sio, res):
    await res.wait_for(lambda r: r.of("session_info"))


async def test_socketio_handshakes_check_origin_on_both_transports():
    async with running_gateway(test_settings(cors_origins=(APP,))) as gw:
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            evil = await client.get("/socket.io/?EIO=4&transport=polling", headers={"origin": EVIL})
            listed = await client.get("/socket.io/?EIO=4&transport=polling", headers={"origin": APP})
            own = await client.get("/socket.io/?EIO=4&transport=polling",
                                   headers={"origin": gw.base_url, "host": gw.base_url.removeprefix("http://")})
            native = await client.get("/socket.io/?EIO=4&transport=polling")
        assert evil.status_code == 403 and evil.json()["error"] == "origin_forbidden"
        assert listed.status_code == own.status_code == native.status_code == 200
        for transports in (["polling"], ["websocket"]):
            try:
                refused = await run_sio(gw.base_url, noop, transports=transports, headers={"Origin": EVIL})
            except RuntimeError as exc:
                # python-engineio closes its HTTP session before it reads a refused polling
                # handshake's body (async_client._connect_polling: _reset() then r.json()), so
                # now and then the 403 surfaces as "Connection closed." instead of a connect_error.
                assert transports == ["polling"] and "Connection closed" in str(exc), exc
            else:
                assert not refused.connected and refused.connect_error, transports
            ok = await run_sio(gw.base_url, noop, transports=transports, headers={"Origin": APP})
            assert ok.connected and ok.of("session_info"), transports


async def test_an_empty_list_is_same_origin_only():
    async with running_gateway(test_settings(cors_origins=())) as gw:
        refused = await run_sio(gw.base_url, noop, transports=["websocket"], headers={"Origin": APP})
        assert not refused.connected and refused.connect_error == "Connection error", refused
        ok = await run_sio(gw.base_url, noop, transports=["websocket"], headers={"Origin": gw.base_url})
        assert ok.connected and ok.of("session_info"), ok


async def test_cookie_bearing_requests_from_a_foreign_origin_are_refused():
    """The victim's cookies ride along on a cross-site request: a stream open, a chat post (JSON and
    multipart, as a form would send it), conv_status.get — all 403 before any work. Same requests
    from the listed origin or without Origin (curl) pass."""
    cookie = {"cookie": f"__Secure-LATC={tok('victim')}; kdc_session=abc"}
    for origins in ((APP,), ("*",), ()):
        async with running_gateway(test_settings(cors_origins=origins)) as gw, \
                httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            foreign = {**cookie, "origin": EVIL}
            replies = [
                await client.get("/sse/stream?stream_id=s1", headers=foreign),
                await client.post("/sse/chat?stream_id=s1", json={"message": "x"}, headers=foreign),
                await client.post("/sse/chat?stream_id=s1", data={"message": '{"text": "x"}'},
                                  files={"files": ("a.txt", b"a")}, headers=foreign),
                await client.post("/sse/conv_status.get", json={"conversation_id": "c"}, headers=foreign),
                await client.get("/socket.io/?EIO=4&transport=polling", headers=foreign),
            ]
            for r in replies:
                assert r.status_code == 403, (origins, r.request.url, r.status_code)
                assert r.json()["error"] == "cross_site_forbidden"
                assert "access-control-allow-credentials" not in r.headers
            # without Origin (not a browser) the cookie works
            r = await client.post("/sse/chat?stream_id=s1", json={"message": "x"}, headers=cookie)
            assert r.status_code == 202
            if origins == (APP,):
                r = await client.post("/sse/chat?stream_id=s1", json={"message": "x"}, headers={**cookie, "origin": APP})
                assert r.status_code == 202 and r.headers["access-control-allow-credentials"] == "true"


async def test_wildcard_never_comes_with_credentials():
    async with running_gateway(test_settings(cors_origins=("*", APP))) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        any_origin = await client.get("/health", headers={"origin": EVIL})
        assert any_origin.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in any_origin.headers
        listed = await client.get("/health", headers={"origin": APP})
        assert listed.headers["access-control-allow-origin"] == APP
        assert listed.headers["access-control-allow-credentials"] == "true"
        # under `*` a foreign page may open a socket with a token in its auth, never with cookies
        res = await run_sio(gw.base_url, noop, transports=["websocket"], headers={"Origin": EVIL},
                            auth={"bearer_token": tok("u")})
        assert res.connected and res.of("session_info")[0]["user_type"] == "registered"


async def test_session_cookie_flags():
    async with running_gateway(test_settings(trust_forwarded_proto=True)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        plain = (await client.get("/profile")).headers["set-cookie"]
        tls = (await client.get("/profile", headers={"x-forwarded-proto": "https"})).headers["set-cookie"]
    attrs = [a.strip() for a in plain.split(";")]
    assert "HttpOnly" in attrs and "SameSite=Lax" in attrs and "Secure" not in attrs
    assert "Secure" in [a.strip() for a in tls.split(";")] and "HttpOnly" in tls
    async with running_gateway(test_settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        untrusted = (await client.get("/profile", headers={"x-forwarded-proto": "https"})).headers["set-cookie"]
    assert "Secure" not in [a.strip() for a in untrusted.split(";")], "X-Forwarded-Proto is not trusted by default"


async def test_metrics_behind_a_token_when_configured():
    async with running_gateway(test_settings(metrics_token="m-secret")) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        none = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"authorization": "Bearer nope"})
        right = await client.get("/metrics", headers={"authorization": "Bearer m-secret"})
    assert none.status_code == wrong.status_code == 401
    assert none.json()["error"] == "metrics_token_required" and "www-authenticate" in none.headers
    assert right.status_code == 200 and b"kdc_" in right.content
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        assert (await client.get("/metrics")).status_code == 200


async def test_an_anonymous_session_is_taken_over_only_by_its_holder():
    """A stranger who learned an anonymous session's id cannot take it with their own token (and
    lock its owner out); the browser holding its cookie can; KDC_ANON_UPGRADE_BY_ID=1 opts in to
    KDCube's rule (the id alone)."""
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as owner, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as stranger:
        sid = (await owner.get("/profile")).json()["session_id"]
        r = await stranger.get(f"/api/session?user_session_id={sid}", headers={"authorization": f"Bearer {tok('mallory')}"})
        assert r.status_code == 403 and r.json()["error"] == "session_forbidden"
        res = await run_sio(gw.base_url, noop, transports=["websocket"],
                            auth={"user_session_id": sid, "bearer_token": tok("mallory")})
        assert not res.connected and res.connect_error["data"]["status"] == 403
        # still the owner's, still anonymous; the owner signs in and keeps it
        assert (await owner.get(f"/api/session?user_session_id={sid}")).json()["user_type"] == "anonymous"
        up = await owner.get(f"/api/session?user_session_id={sid}", headers={"authorization": f"Bearer {tok('al')}"})
        assert up.status_code == 200 and up.json()["user_type"] == "registered" and up.json()["session_id"] == sid
    async with running_gateway(test_settings(anon_upgrade_by_id=True)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        sid = (await client.get("/api/session")).json()["session_id"]
        up = await client.get(f"/api/session?user_session_id={sid}", headers={"authorization": f"Bearer {tok('al')}"})
        assert up.status_code == 200 and up.json()["session_id"] == sid
