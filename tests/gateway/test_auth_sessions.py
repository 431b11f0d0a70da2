"""Auth and sessions through the real server: precedence, rejection, upgrade, hijack, log hygiene."""

from __future__ import annotations

import logging
import time

import httpx
import jwt
import pytest
import trio

from kdc_trio.auth.mint import mint_token
from kdc_trio.logs import setup_logging
from tests.support.gateway import TEST_SECRET, running_gateway, test_settings
from tests.support.sse_client import open_stream


def tok(sub: str, roles=(), **claims) -> str:
    return mint_token(test_settings(), subject=sub, roles=tuple(roles), extra=claims or None)


async def session_of(client, url="/api/session", **kw) -> httpx.Response:
    return await client.get(url, **kw)


async def test_token_sources_and_precedence_through_the_server():
    s = test_settings()
    a, b, c = tok("alice"), tok("bob"), tok("carol")
    async with running_gateway(s) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        cases = [
            # (headers, query, cookies) -> subject
            ({"authorization": f"Bearer {a}"}, {"bearer_token": b}, {s.auth_token_cookie: c}, "alice"),
            ({}, {"bearer_token": b}, {s.auth_token_cookie: c}, "bob"),
            ({}, {}, {s.auth_token_cookie: c}, "carol"),
            ({"authorization": f"Bearer {a}"}, {}, {s.auth_token_cookie: c}, "alice"),
            ({}, {}, {}, None),
        ]
        for headers, query, cookies, subject in cases:
            client.cookies.clear()
            for k, v in cookies.items():
                client.cookies.set(k, v)
            r = await client.get("/api/session", headers=headers, params=query)
            assert r.status_code == 200, r.text
            assert r.json()["user_id"] == subject
            assert r.json()["user_type"] == ("registered" if subject else "anonymous")
        client.cookies.clear()


async def test_privileged_roles_and_three_claim_styles():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        for token in (tok("p1", roles=["admin"]), tok("p2", realm_access={"roles": ["admin"]}),
                      tok("p3", **{"cognito:groups": ["admin"]})):
            r = await client.get("/api/session", headers={"authorization": f"Bearer {token}"})
            assert r.json()["user_type"] == "privileged"
        r = await client.get("/api/session", headers={"authorization": f"Bearer {tok('u', roles=['reader'])}"})
        assert r.json()["user_type"] == "registered"


@pytest.mark.parametrize("kind", ["expired", "not_yet_valid", "bad_signature", "alg_none", "garbage"])
async def test_invalid_tokens_are_401_never_anonymous(kind):
    now = int(time.time())
    tokens = {
        "expired": jwt.encode({"sub": "x", "exp": now - 3600}, TEST_SECRET, algorithm="HS256"),
        "not_yet_valid": jwt.encode({"sub": "x", "exp": now + 7200, "nbf": now + 3600}, TEST_SECRET,
                                    algorithm="HS256"),
        "bad_signature": jwt.encode({"sub": "x", "exp": now + 60}, "another-secret-of-enough-length-123456",
                                    algorithm="HS256"),
        "alg_none": jwt.encode({"sub": "x", "exp": now + 60}, None, algorithm="none"),
        "garbage": "not.a.token",
    }
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        r = await client.get(f"/sse/stream?stream_id=s&bearer_token={tokens[kind]}")
        assert r.status_code == 401 and r.json()["error"] and r.json()["detail"]
        r = await client.post("/sse/chat?stream_id=s", json={"text": "x"},
                              headers={"authorization": f"Bearer {tokens[kind]}"})
        assert r.status_code == 401


async def test_reject_anonymous_switch():
    async with running_gateway(test_settings(sse_reject_anonymous=True)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        r = await client.get("/sse/stream?stream_id=s")
        assert r.status_code == 401 and r.json()["error"] == "authentication_required"
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, f"/sse/stream?stream_id=s&bearer_token={tok('al')}")
            assert st.ready["user_type"] == "registered"
            nursery.cancel_scope.cancel()


async def test_upgrade_and_hijack_attempts():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        anon = (await client.get("/profile")).json()  # sets the session cookie: this client holds it
        sid = anon["session_id"]
        # an anonymous session presented with a token by its holder is upgraded to that user
        up = await client.get(f"/api/session?user_session_id={sid}", headers={"authorization": f"Bearer {tok('al')}"})
        assert up.status_code == 200 and up.json()["user_type"] == "registered" and up.json()["session_id"] == sid
        # now it is al's: another user's token, or no token, does not get it
        r = await client.get(f"/sse/stream?stream_id=s&user_session_id={sid}&bearer_token={tok('mallory')}")
        assert r.status_code == 403
        r = await client.get(f"/sse/stream?stream_id=s&user_session_id={sid}")
        assert r.status_code == 403
        r = await client.post(f"/sse/chat?stream_id=s&user_session_id={sid}", json={"text": "x"})
        assert r.status_code == 403
        # an unknown session id is a 401 Unknown session
        r = await client.get("/sse/stream?stream_id=s&user_session_id=nope")
        assert r.status_code == 401 and r.json()["detail"] == "Unknown session"
        # the same user without a session id gets their session back
        again = await client.get("/api/session", headers={"authorization": f"Bearer {tok('al')}"})
        assert again.json()["session_id"] == sid


async def test_tokens_never_appear_in_logs(capfd):
    settings = test_settings(log_level="DEBUG")
    setup_logging(settings)
    try:
        token = tok("secret-user")
        async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            logging.getLogger("kdc_trio.test").info("request with bearer_token=%s and %s", token, f"Bearer {token}")
            await client.get(f"/sse/stream?stream_id=s&user_session_id=bad&bearer_token={token}")
            await client.get("/boom-route-that-does-not-exist", headers={"authorization": f"Bearer {token}"})
        err = capfd.readouterr().err
        assert "request with bearer_token=" in err  # the line was logged ...
        assert token not in err and token.split(".")[1] not in err  # ... without the token
    finally:
        logging.getLogger().handlers.clear()
