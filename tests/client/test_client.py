"""kdc_trio.client against real `kdc-trio serve` processes, from trio and from asyncio; a stream cut
mid-turn (a real TCP proxy closes the connection) resumes with no lost or repeated event."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import trio

from kdc_trio.auth.mint import mint_token
from kdc_trio.client import (
    Client, Complete, ConnectionLost, Delta, EventsLost, Gap, Refused, Start, Status, Step, TurnFailed,
)
from tests.support.bundles import SLOW_DELTAS
from tests.support.gateway import test_settings
from tests.support.processes import KdcProcess
from tests.support.tcp_proxy import TCPProxy

FILE = b"attached bytes\n" * 100
FILE_SHA = hashlib.sha256(FILE).hexdigest()


@pytest.fixture(scope="module")
def demo_server():
    proc = KdcProcess("serve", {}).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def slow_server():
    proc = KdcProcess("serve", {"KDC_BUNDLE": "tests.support.bundles:SlowBroadcastBundle",
                                "KDC_SSE_RETRY_MS": "200"}).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture
def proxy(slow_server):
    p = TCPProxy(slow_server.port)
    yield p
    p.close()


async def _demo_turn(url: str) -> None:
    """One turn with a file and a second one; the same checks whatever the event loop."""
    async with Client(url) as client:
        assert client.session is not None and client.session.user_type == "anonymous"
        turn = await client.send("hello from python", files=[("notes.txt", FILE, "text/plain")])
        kinds = [type(e) async for e in turn]
        assert kinds[0] is Status and kinds[1] is Start and kinds[-1] is Complete
        answer = Answer_of(turn)
        assert answer.text == "You said: hello from python"
        assert "1 attachment(s)" in answer.thinking
        received = next(s for s in answer.steps if s.step == "attachments_received")
        assert received.data["attachments"][0]["sha256"] == FILE_SHA
        assert answer.followups == ("Tell me more", "Send a file", "Start over")
        assert answer.streams["canvas"].startswith("# Echo")
        # the follow-up as the next turn, in the same conversation
        second = await client.ask(answer.followups[0], conversation_id=turn.conversation_id)
        assert second.text == "You said: Tell me more"
        for events in (turn.events, second.events):  # each turn: one contiguous run of the session sequence
            seqs = [e.seq for e in events]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap or a repeat in the session sequence"
        assert second.events[0].seq > turn.events[-1].seq
        assert client.statistics()["duplicates_dropped"] == 0


def Answer_of(turn):
    from kdc_trio.client import Answer

    return Answer.of(turn.events)


async def test_turn_from_trio(demo_server):
    await _demo_turn(demo_server.base_url)


def test_turn_from_asyncio(demo_server):
    asyncio.run(asyncio.wait_for(_demo_turn(demo_server.base_url), 30))


async def test_two_turns_read_concurrently(demo_server):
    async with Client(demo_server.base_url) as client:
        answers = {}

        async def one(text):
            answers[text] = await client.ask(text)

        async with trio.open_nursery() as nursery:
            for text in ("first one", "second one", "third one"):
                nursery.start_soon(one, text)
        assert {k: v.text for k, v in answers.items()} == {t: f"You said: {t}" for t in answers}


async def _resume(url: str, proxy: TCPProxy, *, refuse_for_s: float) -> None:
    # the server's retry hint is 200 ms here: 20 attempts span ~3.5 s
    async with Client(url, reconnect_attempts=20) as client:
        turn = await client.send("slow")
        deltas = []
        async for ev in turn:
            if isinstance(ev, Delta):
                deltas.append(ev)
                if len(deltas) == 3:
                    assert proxy.drop_all(refuse_for_s=refuse_for_s) >= 1
        assert [d.text for d in deltas] == [f"d{i} " for i in range(SLOW_DELTAS)]
        seqs = [e.seq for e in turn.events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert isinstance(turn.events[-1], Complete)
        stats = client.statistics()
        assert stats["reconnects"] == 1 and stats["duplicates_dropped"] == 0


async def test_dropped_stream_resumes_mid_turn(slow_server, proxy):
    # away ~3 deltas' time: they come back from the session log, then the live ones follow
    with trio.fail_after(30):
        await _resume(proxy.url, proxy, refuse_for_s=0.35)


async def test_dropped_stream_reopened_at_once_repeats_nothing(slow_server, proxy):
    with trio.fail_after(30):
        await _resume(proxy.url, proxy, refuse_for_s=0)


async def test_dropped_stream_resumes_after_the_turn_ended_meanwhile(slow_server, proxy):
    # the gateway is unreachable for longer than the rest of the turn: it all comes from the log
    with trio.fail_after(30):
        await _resume(proxy.url, proxy, refuse_for_s=1.5)


def test_dropped_stream_resumes_from_asyncio(slow_server, proxy):
    asyncio.run(asyncio.wait_for(_resume(proxy.url, proxy, refuse_for_s=0.3), 30))


async def test_resume_past_the_log_ends_the_turn_with_a_gap():
    # a log of 3 events and an outage of ~8 deltas: the resume point is no longer held
    proc = KdcProcess("serve", {"KDC_BUNDLE": "tests.support.bundles:SlowBroadcastBundle",
                                "KDC_SSE_RETRY_MS": "200", "KDC_SESSION_LOG_SIZE": "3"}).wait_ready()
    proxy = TCPProxy(proc.port)
    try:
        async with Client(proxy.url, reconnect_attempts=20) as client:
            turn = await client.send("slow")
            seen = []
            with trio.fail_after(30):
                async for ev in turn:
                    seen.append(ev)
                    if isinstance(ev, Delta) and ev.text == "d1 ":
                        proxy.drop_all(refuse_for_s=0.8)
            gap = seen[-1]
            assert isinstance(gap, Gap) and gap.after_seq == seen[-2].seq and gap.first_seq > gap.after_seq + 1
            assert client.statistics()["gaps"] == 1
            with pytest.raises(EventsLost) as lost:
                await turn.answer()
            assert lost.value.answer.text.startswith("d0 d1 ")
            # the connection goes on: a new turn after the gap completes normally
            assert isinstance((await (await client.send("again")).answer()).complete, Complete)
    finally:
        proxy.close()
        proc.stop()


async def test_stream_gone_for_good_is_connection_lost(slow_server, proxy):
    async with Client(proxy.url, reconnect_attempts=2) as client:
        turn = await client.send("slow")
        await turn.__anext__()
        proxy.drop_all(refuse_for_s=60)
        with pytest.raises(ConnectionLost, match="not re-opened after 2 attempts"):
            async for _ in turn:
                pass


async def test_token_and_refusals():
    settings = test_settings()
    proc = KdcProcess("serve", {"CHAT_SSE_REJECT_ANONYMOUS": "1"}).wait_ready()
    try:
        token = mint_token(settings, subject="alice", roles=(), ttl_s=600)
        async with Client(proc.base_url, token=token) as client:
            assert client.session.user_type == "registered" and client.session.user_id == "alice"
            assert (await client.ask("hi")).text == "You said: hi"
        with pytest.raises(Refused) as refused:
            await Client(proc.base_url).connect()
        assert refused.value.status == 401 and refused.value.error == "authentication_required"
        with pytest.raises(Refused) as bad:
            await Client(proc.base_url, token="not-a-jwt").connect()
        assert bad.value.status == 401
    finally:
        proc.stop()


async def test_chat_error_raises_turn_failed():
    proc = KdcProcess("serve", {"KDC_BUNDLE": "tests.support.bundles:FailingBundle"}).wait_ready()
    try:
        async with Client(proc.base_url) as client:
            with pytest.raises(TurnFailed) as failed:
                await client.ask("break")
            assert "RuntimeError" in failed.value.event.error
            assert failed.value.answer.text == "partial "
    finally:
        proc.stop()


async def test_unreachable_is_connection_lost():
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(ConnectionLost, match="cannot reach"):
            await Client(f"http://127.0.0.1:{port}").connect()


async def test_step_and_delta_are_typed(demo_server):
    async with Client(demo_server.base_url) as client:
        turn = await client.send("typed")
        events = [e async for e in turn]
    followups = [e for e in events if isinstance(e, Step) and e.type == "chat.followups"]
    assert len(followups) == 1 and followups[0].data["items"]
    markers = {e.marker for e in events if isinstance(e, Delta)}
    assert markers == {"thinking", "answer", "canvas", "timeline_text"}
    with pytest.raises(AttributeError):
        events[0].seq = 5  # frozen
