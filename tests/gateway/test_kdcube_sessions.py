"""Sessions as KDCube's clients expect them: an anonymous post without a session id reaches its
stream (the live stream's session, or the sticky cookie), who may take which session that way,
and tenant/project named on one transport and not on another (never a 403), in memory and
through Redis (two gateways: the stream on one, the post on the other)."""

from __future__ import annotations

import httpx
import pytest
import trio

from kdc_trio.auth.mint import mint_token
from tests.support.gateway import running_gateway, test_settings
from tests.support.redis_server import redis_server
from tests.support.sio_client import run_sio
from tests.support.sse_client import open_stream


def tok(sub: str) -> str:
    return mint_token(test_settings(), subject=sub)


def prompt(text: str, **kw) -> dict:
    return {"external_events": [{"type": "event.user.prompt", "payload": {"event": {"text": text}}}],
            "tenant": "acme", "project": "site", **kw}


async def post(base: str, path: str, **kw) -> httpx.Response:
    """A post from a client with no cookie jar at all (as Node's fetch): only what it sends."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as fresh:
        return await fresh.post(path, **kw)


async def anonymous_stream_then_bare_post(stream_base: str, post_base: str) -> None:
    async with httpx.AsyncClient(base_url=stream_base, timeout=10) as client:
        sid = (await client.get("/profile")).json()["session_id"]  # created in the default scope
        async with trio.open_nursery() as nursery:
            # the stream names another tenant/project than the session was created in: no 403
            st = await open_stream(nursery, client, f"/sse/stream?stream_id=tab-1&user_session_id={sid}"
                                                    f"&tenant=acme&project=site")
            assert st.status == 200 and st.ready["session_id"] == sid
            assert (st.ready["tenant"], st.ready["project"]) == ("acme", "site")
            r = await post(post_base, "/sse/chat?stream_id=tab-1", json=prompt("no session id"))
            assert r.status_code == 202, r.text
            assert r.json()["session_id"] == sid  # the live stream's own session
            await st.wait_for(lambda s: s.of("chat_complete"))
            done = st.of("chat_complete")[0].data
            assert done["conversation"]["session_id"] == sid and done["service"]["tenant"] == "acme"
            # conv_status.get without a session id: the stream named in its body decides, as for the post
            r = await post(post_base, "/sse/conv_status.get",
                           json={"conversation_id": r.json()["conversation_id"], "stream_id": "tab-1"})
            assert r.status_code == 200, r.text
            nursery.cancel_scope.cancel()


async def test_anonymous_post_without_session_reaches_its_stream():
    async with running_gateway() as gw:
        await anonymous_stream_then_bare_post(gw.base_url, gw.base_url)


async def test_through_redis_the_stream_on_one_gateway_the_post_on_another():
    with redis_server() as srv:
        s = test_settings(redis_url=srv.url)
        async with running_gateway(s) as a, running_gateway(s, with_worker=False) as b:
            await anonymous_stream_then_bare_post(a.base_url, b.base_url)
            # the binding is gone with the stream (released in Redis by the gateway that held it)
            with trio.fail_after(5):
                while await a.store.stream_binding("tab-1") is not None:
                    await trio.sleep(0.02)


@pytest.mark.parametrize("redis", [False, True])
async def test_sticky_cookie_set_by_profile_and_stream_is_used_by_posts(redis):
    with redis_server() as srv:
        s = test_settings(redis_url=srv.url) if redis else test_settings()
        async with running_gateway(s) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            r = await client.get("/profile")
            sid = r.json()["session_id"]
            cookie = r.headers["set-cookie"]
            assert cookie.startswith(f"kdc_session={sid};") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
            assert "Secure" not in cookie
            # a post naming no live stream and no session: the cookie's session
            r = await client.post("/sse/chat?stream_id=not-open", json=prompt("hi"))
            assert r.status_code == 202 and r.json()["session_id"] == sid
            assert (await client.get("/profile")).json()["session_id"] == sid  # a reload keeps the session
            # a stream never takes the cookie (it names its session, or gets a new one) but sets it
            async with trio.open_nursery() as nursery:
                st = await open_stream(nursery, client, "/sse/stream?stream_id=t2")
                assert st.ready["session_id"] != sid
                nursery.cancel_scope.cancel()
            assert client.cookies["kdc_session"] == st.ready["session_id"]
            # garbage or an unknown id in the cookie: passed over, a new session, never an error
            for value in ("no such session", "unknown-session-id"):
                client.cookies.clear()
                r = await client.get("/profile", headers={"cookie": f"kdc_session={value}"})
                assert r.status_code == 200 and r.json()["session_id"] not in (sid, value)


async def test_cookie_can_be_switched_off_and_made_secure():
    s = test_settings(session_cookie="", session_cookie_secure=True)
    async with running_gateway(s) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        r = await client.get("/profile")
        assert "set-cookie" not in r.headers
    s = test_settings(session_cookie_secure=True, session_cookie_samesite="None")
    async with running_gateway(s) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        r = await client.get("/profile")
        assert "; Secure" in r.headers["set-cookie"] and "SameSite=None" in r.headers["set-cookie"]


async def test_who_may_take_a_session_implicitly():
    alice, bob = tok("alice"), tok("bob")
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, f"/sse/stream?stream_id=alice-tab&bearer_token={alice}")
            alice_sid = st.ready["session_id"]
            assert st.ready["user_type"] == "registered"
            # no token: a registered user's stream is not handed to an anonymous post
            r = await post(gw.base_url, "/sse/chat?stream_id=alice-tab", json=prompt("anon"))
            assert r.status_code == 202 and r.json()["session_id"] != alice_sid
            # another user's token: not handed over either (their own session, no 403)
            r = await post(gw.base_url, "/sse/chat?stream_id=alice-tab", json=prompt("bob"),
                           headers={"authorization": f"Bearer {bob}"})
            assert r.status_code == 202 and r.json()["session_id"] != alice_sid
            # alice's token: her stream's session, and its replies reach her stream
            r = await post(gw.base_url, "/sse/chat?stream_id=alice-tab", json=prompt("alice"),
                           headers={"authorization": f"Bearer {alice}"})
            assert r.status_code == 202 and r.json()["session_id"] == alice_sid
            await st.wait_for(lambda s: s.of("chat_complete"))
            # a cookie naming alice's session, without her token: passed over (a new session, not 403)
            r = await post(gw.base_url, "/sse/chat?stream_id=elsewhere", json=prompt("cookie"),
                           headers={"cookie": f"kdc_session={alice_sid}"})
            assert r.status_code == 202 and r.json()["session_id"] != alice_sid
            # presenting her session id explicitly without the token is still the 403 it was
            r = await post(gw.base_url, f"/sse/chat?stream_id=x&user_session_id={alice_sid}", json=prompt("x"))
            assert r.status_code == 403
            nursery.cancel_scope.cancel()


async def test_stream_binding_survives_a_reconnect_with_the_same_stream_id():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as outer:
            first_scope = trio.CancelScope()

            async def first() -> None:
                with first_scope:
                    async with trio.open_nursery() as n:
                        await open_stream(n, client, "/sse/stream?stream_id=same")
                        await trio.sleep_forever()

            outer.start_soon(first)
            with trio.fail_after(5):
                while await gw.store.stream_binding("same") is None:
                    await trio.sleep(0.01)
            second = await open_stream(outer, client, "/sse/stream?stream_id=same")
            first_scope.cancel()  # the old connection of this stream id ends after the new one bound it
            await trio.sleep(0.2)
            binding = await gw.store.stream_binding("same")
            assert binding is not None and binding.session_id == second.ready["session_id"]
            outer.cancel_scope.cancel()


async def test_socketio_names_a_tenant_the_session_was_not_created_in():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        sid = (await client.get("/profile")).json()["session_id"]

        async def scenario(sio, res):
            await res.wait_for(lambda r: r.of("session_info"))
            res.acks.append(await sio.call("chat_message", prompt("over sio", conversation_id="c-sio"), timeout=10))
            await res.wait_for(lambda r: r.of("chat_complete"))

        res = await run_sio(gw.base_url, scenario, transports=["websocket"],
                            auth={"user_session_id": sid, "tenant": "acme", "project": "site"})
        info = res.of("session_info")[0]
        assert res.connect_error is None and info["session_id"] == sid and info["tenant"] == "acme"
        assert res.acks[0]["ok"] is True
        assert res.of("chat_complete")[0]["service"]["tenant"] == "acme"
        # and the same session over SSE naming nothing: the session's home (the defaults), no 403
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, f"/sse/stream?stream_id=home&user_session_id={sid}")
            assert st.status == 200 and (st.ready["tenant"], st.ready["project"]) == ("home", "demo")
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("redis", [False, True])
async def test_opt_in_fingerprint_shares_one_anonymous_session_per_address_and_agent(redis):
    with redis_server() as srv:
        extra = {"redis_url": srv.url} if redis else {}
        async with running_gateway(test_settings(anon_fingerprint=True, **extra)) as gw:
            firefox, curl = {"user-agent": "Firefox/1"}, {"user-agent": "curl/8"}
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10, headers=firefox) as a, \
                    httpx.AsyncClient(base_url=gw.base_url, timeout=10, headers=firefox) as b, \
                    httpx.AsyncClient(base_url=gw.base_url, timeout=10, headers=curl) as c:
                first = (await a.get("/profile")).json()["session_id"]
                assert (await b.get("/profile")).json()["session_id"] == first  # no cookie, same address + agent
                r = await b.post("/sse/chat?stream_id=none-open", json=prompt("fp"))
                assert r.json()["session_id"] == first
                assert (await c.get("/profile")).json()["session_id"] != first  # another agent
                # a token is never matched by fingerprint
                r = await b.get("/profile", headers={"authorization": f"Bearer {tok('carol')}"})
                assert r.json()["session_id"] != first
        async with running_gateway(test_settings(**extra)) as gw:  # off (the default): no sharing
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as a, \
                    httpx.AsyncClient(base_url=gw.base_url, timeout=10) as b:
                assert (await a.get("/profile")).json()["session_id"] != (await b.get("/profile")).json()["session_id"]
