"""KDCube's own web clients, replayed on the wire against a real gateway (no KDCube code, no network).

The chat web app (`W/` = app/ai-app/ui/chat-web-app/src at kdcube/kdcube-ai-app eefe18532) over SSE
anonymous, with its cookie token and with a Bearer token, and over Socket.IO with a token; and the mini
app's SseChatService (`P/` = app/ai-app/ui/mini-apps/sse-proto/src). Each request carries the paths,
query parameters, headers, cookies and bodies that code sends, and each check reads the fields its
reducers read (tests/kdcube/replay_client.py names the lines). tools/kdcube_harness/ runs the real
client code the same way when KDCube's sources are at hand (tests/kdcube/test_kdcube_client_harness.py).
"""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlencode

import httpx
import pytest
import trio

from kdc_trio.auth.mint import mint_token
from tests.kdcube.replay_client import (AUTH_COOKIE, STREAM_ID_HEADER, PickedFile, assert_submit_accepted,
                                        check_demo_turn, client_turn_id, demo_files, envelope_problems,
                                        event_submission, history_entry, is_epoch, js_date_parse_ok, reduce_turn,
                                        tz_headers)
from tests.support.gateway import running_gateway, test_settings
from tests.support.sio_client import run_sio
from tests.support.sse_client import SSEStream, open_stream

TENANT, PROJECT = "home", "demo"
MAX_CHARS = 20_000   # a message past this is refused: the refusal tests


def settings():
    return test_settings(max_message_chars=MAX_CHARS)


def token() -> str:
    return mint_token(settings(), subject="kdcube-user", username="KDCube User")


class WebAppSSE:
    """W/features/chatController/sseChat.ts with W/features/profile/profile.ts, as the app's store drives
    them with its default settings (useAuthCookies: true, streamIdHeaderName KDC-Stream-ID)."""

    def __init__(self, client: httpx.AsyncClient, mode: str, tok: str | None = None) -> None:
        self.client, self.mode, self.token = client, mode, tok
        self.session_id: str | None = None
        self.stream_id: str | None = None
        self.conversation_id: str | None = None
        self.history: list[dict] = []
        if mode == "cookie":
            # W/features/auth/authMiddleware.ts:271-285 setAuthToken -> W/utils/cookies.ts:9-31 document.cookie
            client.cookies.set(AUTH_COOKIE, tok)

    def credentials(self) -> dict[str, str]:
        """W/features/chatController/chatBase.ts:479-493; set only without auth cookies
        (W/features/chat/chatServiceMiddleware.ts:377-381, W/app/api/utils.ts:48-49)."""
        return {"Authorization": f"Bearer {self.token}"} if self.mode == "bearer" else {}

    async def fetch_profile(self) -> dict:
        # W/features/profile/profile.ts:72-76: GET /profile, appendDefaultHeaders({"Content-Type": ...}),
        # credentials: "include" (the client's cookie jar)
        r = await self.client.get("/profile", headers={"Content-Type": "application/json", **self.credentials()})
        assert r.status_code == 200, r.text                          # profile.ts:77-80 response.ok
        body = r.json()
        self.session_id = body["session_id"]                         # profile.ts:102; chatServiceMiddleware.ts:371
        return body

    async def connect(self, nursery: trio.Nursery, *, last_event_id: str | None = None) -> SSEStream:
        # W/features/chatController/sseChat.ts:34-50 constructEventSource; withCredentials: cookies go along
        self.stream_id = str(uuid.uuid4())
        params = {"user_session_id": self.session_id, "stream_id": self.stream_id, "tenant": TENANT,
                  "project": PROJECT}
        if self.mode == "bearer":
            params["bearer_token"] = self.token                      # sseChat.ts:45
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id                 # what an EventSource resends on reconnect
        return await open_stream(nursery, self.client, f"/sse/stream?{urlencode(params)}", headers=headers)

    async def send(self, text: str, *, files: list[PickedFile] = (), reactive: str = "event.user.prompt",
                   target_turn_id: str | None = None) -> tuple[httpx.Response, str]:
        """W/features/chat/chatServiceMiddleware.ts:400-478 then sseChat.ts:112-158 sendChatMessage."""
        turn_id = client_turn_id()                                   # chatServiceMiddleware.ts:413
        body = event_submission(text, tenant=TENANT, project=PROJECT, turn_id=turn_id, files=files,
                                reactive_event_type=reactive, conversation_id=self.conversation_id,
                                chat_history=None if target_turn_id else list(self.history),
                                target_turn_id=target_turn_id)
        url = f"/sse/chat?{urlencode({'stream_id': self.stream_id})}"    # sseChat.ts:131-133
        headers = {**self.credentials(), STREAM_ID_HEADER: self.stream_id, **tz_headers()}   # sseChat.ts:135-137
        if files:                                                    # sseChat.ts:139-147: FormData
            r = await self.client.post(url, headers=headers, data={"event_submission": json.dumps(body)},
                                       files=[("files", (f.name, f.data, f.mime)) for f in files])
        else:                                                        # sseChat.ts:148-157
            r = await self.client.post(url, headers={**headers, "Content-Type": "application/json"},
                                       content=json.dumps(body, separators=(",", ":")).encode())
        if r.is_success and not target_turn_id:
            ack = assert_submit_accepted(r.json())                   # sseChat.ts:147/157
            self.conversation_id = ack["conversation_id"]            # chatServiceMiddleware.ts:480
            self.history.append(history_entry(text, time.time_ns() // 1_000_000))
        return r, turn_id

    async def conv_status_get(self, conversation_id: str) -> httpx.Response:
        # W/features/chatController/sseChat.ts:162-174 requestConvStatus (no stream id header, no TZ)
        return await self.client.post("/sse/conv_status.get",
                                      headers={**self.credentials(), "Content-Type": "application/json"},
                                      content=json.dumps({"conversation_id": conversation_id,
                                                          "stream_id": self.stream_id}).encode())


def chat_events(st: SSEStream) -> list[tuple[str, dict]]:
    return [(e.event, e.data) for e in st.events if e.event != "ready"]


async def wait_turn_end(st: SSEStream, turn_id: str, timeout: float = 20.0) -> None:
    def ended(s: SSEStream) -> bool:
        return any(e.event in ("chat_complete", "chat_error") and e.data["conversation"]["turn_id"] == turn_id
                   for e in s.events)
    try:
        await st.wait_for(ended, timeout)
    except trio.TooSlowError:
        seen = [(e.event, (e.data or {}).get("conversation", {}).get("turn_id")) for e in st.events]
        raise AssertionError(f"no chat_complete/chat_error for {turn_id} in {timeout}s; the stream got {seen}") from None


def check_profile(profile: dict, mode: str) -> None:
    """KDCube's /profile (W/features/profile/profile.ts:100-107 reads these; authMiddleware.ts:206-215 too)."""
    assert isinstance(profile["session_id"], str) and profile["session_id"]
    assert isinstance(profile.get("created_at"), (str, int, float))
    if mode == "anonymous":
        assert profile["user_type"] == "ANONYMOUS"
    else:
        assert profile["user_type"] == "REGISTERED"
        assert profile["user_id"] == "kdcube-user" and profile["username"] == "KDCube User"
        assert isinstance(profile["roles"], list) and isinstance(profile["permissions"], list)


@pytest.mark.parametrize("mode", ["anonymous", "cookie", "bearer"])
async def test_web_app_over_sse_holds_turns(mode):
    """Connect, a plain message, two attachments (multipart), conv_status.get: every envelope readable."""
    async with running_gateway(settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client:
        app = WebAppSSE(client, mode, token() if mode != "anonymous" else None)
        check_profile(await app.fetch_profile(), mode)
        async with trio.open_nursery() as nursery:
            st = await app.connect(nursery)
            assert st.status == 200, st.error_body
            assert st.ready["session_id"] == app.session_id
            assert js_date_parse_ok(st.ready["timestamp"]) and is_epoch(st.ready.get("ts")), st.ready

            text = "hello from KDCube's web app"
            r, turn_id = await app.send(text)                         # no user_session_id: the stream's session
            assert r.is_success, r.text
            ack = r.json()
            assert ack["turn_id"] == turn_id, "a client-chosen turn_id is used as given"
            await wait_turn_end(st, turn_id)

            files = demo_files()
            r, files_turn = await app.send("two files attached", files=files)
            assert r.is_success, r.text
            assert r.json()["conversation_id"] == app.conversation_id
            await wait_turn_end(st, files_turn)

            r = await app.conv_status_get(app.conversation_id)
            assert r.is_success, r.text                              # sseChat.ts:172
            await st.wait_for(lambda s: any(e.event == "conv_status" and e.data["conversation"]["conversation_id"]
                                            == app.conversation_id and e.data["data"]["state"] == "idle"
                                            for e in s.events[-3:]), 10)
            nursery.cancel_scope.cancel()
        events = chat_events(st)
        assert [p for fam, env in events for p in envelope_problems(fam, env)] == []
        assert check_demo_turn(reduce_turn(events, turn_id), text) == []
        assert check_demo_turn(reduce_turn(events, files_turn), "two files attached", files) == []


async def test_followup_and_steer_during_a_running_turn_are_accepted_continuations():
    """W/features/chat/chatServiceMiddleware.ts:402-412: with a turn in progress the app sends
    event.user.followup / event.user.steer with active_turn_id = target_turn_id = that turn, and reads
    the ack's status / is_continuation / live_owner_detected / active_turn_id (:494-500)."""
    async with running_gateway(settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client:
        app = WebAppSSE(client, "anonymous")
        await app.fetch_profile()
        async with trio.open_nursery() as nursery:
            st = await app.connect(nursery)
            long_text = " ".join(f"word{i}" for i in range(600))
            r, running = await app.send(long_text)
            assert r.is_success, r.text
            await st.wait_for(lambda s: any(e.event == "chat_start" and e.data["conversation"]["turn_id"] == running
                                            for e in s.events), 10)
            acks = []
            for text, reactive in (("and one more thing", "event.user.followup"),
                                   ("steer: keep it short", "event.user.steer")):
                r, _ = await app.send(text, reactive=reactive, target_turn_id=running)
                assert r.status_code == 202, r.text
                acks.append(assert_submit_accepted(r.json()))
            assert not any(e.event == "chat_complete" and e.data["conversation"]["turn_id"] == running
                           for e in st.events), "the turn was still running when both were accepted"
            for ack in acks:
                assert ack["is_continuation"] is True, ack
                assert ack["conversation_id"] == app.conversation_id
                assert ack.get("live_owner_detected") is not False
                assert ack.get("active_turn_id") in (None, running)
            await wait_turn_end(st, running, timeout=30)
            await st.wait_for(lambda s: s.of("conv_status")[-1].data["data"]["state"] == "idle"
                              and not [e for e in s.events[-1:] if e.event != "conv_status"], 30)
            nursery.cancel_scope.cancel()
        events = chat_events(st)
        assert [p for fam, env in events for p in envelope_problems(fam, env)] == []
        # The follow-up is answered once: taken by the running turn (continuation_received) or run as the
        # next turn; the steer is taken (steer_received) or told as dropped (a chat_service notice).
        view = reduce_turn(events, running)
        taken = view.steps.get("continuation_received", {}).get("status") == "completed"
        assert check_demo_turn(view, long_text, took_followup="and one more thing" if taken else None) == []
        later = [env["conversation"]["turn_id"] for fam, env in events if fam == "chat_start"
                 and env["conversation"]["turn_id"] != running]
        assert len(later) == (0 if taken else 1), later
        for turn_id in later:
            assert check_demo_turn(reduce_turn(events, turn_id), "and one more thing") == []
        dropped = [env for fam, env in events if fam == "chat_service" and env.get("type") == "event.continuation.dropped"]
        assert "steer_received" in view.steps or dropped, "the steer was neither taken nor told as dropped"


async def test_refusal_names_the_request_ids_and_the_app_can_read_it():
    """A refused post: chatSubmitErrorFromResponse (W/features/chatController/chatBase.ts:216-235) reads
    `detail` or the body; a `chat_error` it causes must carry the request's own ids (the reducer indexes
    state.turns by conversation.turn_id, W/features/chat/chatStateSlice.ts:609-611)."""
    async with running_gateway(settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client:
        app = WebAppSSE(client, "anonymous")
        await app.fetch_profile()
        async with trio.open_nursery() as nursery:
            st = await app.connect(nursery)
            r, turn_id = await app.send("x" * (MAX_CHARS + 1))
            assert 400 <= r.status_code < 500, r.text
            body = r.json()
            assert isinstance(body.get("detail", body.get("error")), (str, dict)), body
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
        for fam, env in chat_events(st):
            assert envelope_problems(fam, env) == []
            if fam == "chat_error":
                assert env["conversation"]["turn_id"] == turn_id


async def test_a_foreign_last_event_id_starts_a_fresh_stream():
    """A browser moved from a KDCube gateway resends its Last-Event-ID (a uuid there): a fresh stream."""
    async with running_gateway(settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client:
        app = WebAppSSE(client, "anonymous")
        await app.fetch_profile()
        async with trio.open_nursery() as nursery:
            st = await app.connect(nursery, last_event_id=str(uuid.uuid4()))
            assert st.status == 200, st.error_body
            assert st.ready["session_id"] == app.session_id
            nursery.cancel_scope.cancel()


async def test_web_app_over_socketio_with_a_token():
    """W/features/chatController/socketIOChat.ts (its namespace "" taken as "/", see the harness):
    auth + query {user_session_id, project, tenant, bearer_token, id_token}, chat_message with the
    submission then one binary argument per file, acks with ok, conv_status.get."""
    tok = token()
    async with running_gateway(settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client:
        profile = await WebAppSSE(client, "bearer", tok).fetch_profile()     # chatServiceMiddleware.ts:371-374
        # socketIOChat.ts:109-120: the auth payload; engine.io-client puts it in the query too, where an
        # unset id_token becomes the string "undefined" (engine.io-client contrib/parseqs.js encode)
        auth = {"user_session_id": profile["session_id"], "project": PROJECT, "tenant": TENANT, "bearer_token": tok}
        query = urlencode({**auth, "id_token": "undefined"})
        files = demo_files()
        texts = {}

        async def scenario(sio, res):
            await res.wait_for(lambda r: r.of("session_info"), 10)
            conversation_id = None
            for text, attached in (("hello over Socket.IO", []), ("two files attached", files)):
                turn_id = client_turn_id()
                sub = event_submission(text, tenant=TENANT, project=PROJECT, turn_id=turn_id, files=attached,
                                       conversation_id=conversation_id)
                # socketIOChat.ts:233-240 emitWithAck("chat_message", submission, ...arrayBuffers)
                ack = await sio.call("chat_message", (sub, *(f.data for f in attached)), timeout=10)
                assert_submit_accepted(ack)
                assert ack["ok"] is True and ack["turn_id"] == turn_id, ack
                conversation_id = ack["conversation_id"]
                texts[turn_id] = (text, attached)
                await res.wait_for(lambda r, t=turn_id: any(e in ("chat_complete", "chat_error")
                                                            and d["conversation"]["turn_id"] == t
                                                            for e, d in r.events), 20)
            refused = await sio.call("chat_message", (event_submission(
                "y" * (MAX_CHARS + 1), tenant=TENANT, project=PROJECT, turn_id=client_turn_id(),
                conversation_id=conversation_id),), timeout=10)
            assert isinstance(refused, dict) and refused.get("ok") is False, refused
            await sio.emit("conv_status.get", {"conversation_id": conversation_id})   # socketIOChat.ts:245
            await res.wait_for(lambda r: any(d["conversation"]["conversation_id"] == conversation_id
                                             for d in r.of("conv_status")), 10)

        res = await run_sio(f"{gw.base_url}/?{query}", scenario, auth=auth, transports=["websocket"])
    assert res.connected, res.connect_error
    info = res.of("session_info")[0]                                  # socketIOChat.ts:192-198
    assert info["session_id"] == profile["session_id"] and info["user_type"]
    assert isinstance(info["roles"], list)
    events = [(name, data) for name, data in res.events if name in
              ("chat_start", "chat_step", "chat_delta", "chat_complete", "chat_error", "conv_status")]
    assert [p for fam, env in events for p in envelope_problems(fam, env)] == []
    for turn_id, (text, attached) in texts.items():
        assert check_demo_turn(reduce_turn(events, turn_id), text, attached) == []


@pytest.mark.parametrize("with_token", [False, True])
async def test_sse_proto_service(with_token):
    """P/sse/SseChatService.ts: /profile (Bearer when it has a token), the stream, then its older body
    `{message: {message, chat_history, project, tenant, turn_id, conversation_id}, attachment_meta}`."""
    tok = token() if with_token else None
    auth = {"Authorization": f"Bearer {tok}"} if tok else {}
    async with running_gateway(settings()) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client:
        r = await client.get("/profile", headers=auth)                # SseChatService.ts:90-103
        assert r.status_code == 200 and r.json()["session_id"], r.text
        session_id = r.json()["session_id"]
        stream_id = str(uuid.uuid4())
        params = {"user_session_id": session_id, "stream_id": stream_id, "tenant": TENANT, "project": PROJECT}
        if tok:
            params["bearer_token"] = tok                              # SseChatService.ts:113-120
        conversation_id = str(uuid.uuid4())                           # P/App.tsx:24 useState(uuidv4())
        sent = {}
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, f"/sse/stream?{urlencode(params)}",
                                   headers={"Accept": "text/event-stream"})
            assert st.ready["session_id"] == session_id and js_date_parse_ok(st.ready["timestamp"])
            for text, files in (("hello from sse-proto", []), ("two files attached", demo_files())):
                payload = {"message": {"message": text, "chat_history": [], "project": PROJECT, "tenant": TENANT,
                                       "turn_id": client_turn_id(), "conversation_id": conversation_id},
                           "attachment_meta": []}                     # SseChatService.ts:180-190
                url = f"/sse/chat?{urlencode({'stream_id': stream_id})}"
                if files:                                             # SseChatService.ts:200-214
                    r = await client.post(url, headers=auth, data={
                        "message": json.dumps(payload), "attachment_meta": json.dumps([{"filename": f.name} for f in files])},
                        files=[("files", (f.name, f.data, f.mime)) for f in files])
                else:                                                 # SseChatService.ts:215-226
                    r = await client.post(url, headers={**auth, "Content-Type": "application/json"},
                                          content=json.dumps(payload).encode())
                assert r.is_success, r.text
                assert r.json()["conversation_id"] == conversation_id, "a client-chosen conversation_id is used"
                sent[r.json()["turn_id"]] = (text, files)
                await wait_turn_end(st, r.json()["turn_id"])
            nursery.cancel_scope.cancel()
    events = chat_events(st)
    assert [p for fam, env in events for p in envelope_problems(fam, env)] == []
    for turn_id, (text, files) in sent.items():
        assert check_demo_turn(reduce_turn(events, turn_id), text, files) == []
