"""Socket.IO connection-state recovery on the wire (raw WebSocket frames, one gateway in process):
pid in the CONNECT reply, the seq as a last string argument of session events only, a pid resumed
by its own user (same sid and pid, the rest of the targeted turn, nothing twice) and refused to
another user, and python-socketio clients left without pid or offsets."""

from __future__ import annotations

import json

import trio

from kdc_trio.auth.mint import mint_token
from tests.support.bundles import TARGETED_DELTAS, SlowTargetedBundle
from tests.support.gateway import running_gateway, test_settings
from tests.support.raw_ws import RawWS
from tests.support.sio_client import run_sio

SIO = "/socket.io/?EIO=4&transport=websocket"


class Client:
    """A raw Socket.IO client: connects with an auth payload, collects events as (name, args)."""

    def __init__(self, ws: RawWS, reply: dict) -> None:
        self.ws, self.reply, self.events = ws, reply, []

    @classmethod
    async def connect(cls, base_url: str, auth: dict) -> "Client":
        ws = await RawWS.connect(base_url, SIO)
        assert str(await ws.recv()).startswith("0{")
        await ws.send("40" + json.dumps(auth))
        first = await ws.recv()
        assert isinstance(first, str) and first.startswith("40"), first
        return cls(ws, json.loads(first[2:]))

    async def read_until(self, pred, timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while not pred(self):
                msg = await self.ws.recv(timeout)
                if isinstance(msg, str) and msg.startswith("42"):
                    name, *args = json.loads(msg[2:])
                    self.events.append((name, args))
                elif msg == "2":
                    await self.ws.send("3")

    def of(self, name: str) -> list[list]:
        return [a for n, a in self.events if n == name]


async def test_pid_in_the_reply_and_offsets_only_on_session_events():
    async with running_gateway(test_settings(), bundle=SlowTargetedBundle()) as gw:
        c = await Client.connect(gw.base_url, {})
        assert set(c.reply) == {"sid", "pid"} and len(c.reply["pid"]) >= 20
        await c.read_until(lambda c: c.of("session_info"))
        await c.ws.send('42["chat_message",{"message":"hello"}]')
        await c.read_until(lambda c: c.of("chat_complete"), timeout=20)
        await c.ws.aclose()
    (info,) = c.of("session_info")
    assert len(info) == 1 and info[0]["stream_id"] == c.reply["sid"] and info[0]["recovered"] is False
    for name, args in c.events:
        seq = args[0].get("seq") if isinstance(args[0], dict) else None
        if name in ("chat_start", "chat_delta", "chat_complete"):
            assert args[1:] == [str(seq)], (name, args)
        else:  # conv_status, session_info...: not ending with a string unless it is a logged event
            assert not isinstance(args[-1], str) or args[-1] == str(seq), (name, args)


async def test_a_dropped_socket_recovers_its_stream_and_the_rest_of_its_turn():
    settings = test_settings()
    bob = mint_token(settings, subject="bob", ttl_s=600)
    async with running_gateway(settings, bundle=SlowTargetedBundle()) as gw:
        c = await Client.connect(gw.base_url, {"bearer_token": bob})
        await c.ws.send('42["chat_message",{"message":"hold 0.2"}]')
        await c.read_until(lambda c: len(c.of("chat_delta")) >= 3, timeout=20)
        await c.ws.aclose()  # dropped mid-turn: the turn's events target the old sid
        offset = [a[-1] for _, a in c.events if isinstance(a[-1], str)][-1]
        again = await Client.connect(gw.base_url, {"bearer_token": bob, "pid": c.reply["pid"], "offset": offset})
        await again.read_until(lambda c: c.of("chat_complete"), timeout=20)
        await again.ws.aclose()
    assert again.reply == c.reply, "same sid (stream) and the same pid: the client sets socket.recovered"
    assert again.of("session_info")[0][0]["recovered"] is True
    seqs = [int(a[-1]) for _, a in c.events + again.events if isinstance(a[-1], str)]
    assert seqs == sorted(set(seqs)) and seqs == list(range(seqs[0], seqs[-1] + 1)), seqs
    texts = [a[0]["delta"]["text"] for n, a in c.events + again.events if n == "chat_delta"]
    assert texts == [f"t{i} " for i in range(TARGETED_DELTAS)]
    # the replay came before anything new: the first events after the CONNECT are the missed ones
    assert again.events[0][0] == "session_info" and int(again.events[1][1][-1]) == int(offset) + 1


async def test_another_users_pid_resumes_nothing_and_a_missing_offset_resumes_from_the_pid():
    settings = test_settings()
    bob = mint_token(settings, subject="bob", ttl_s=600)
    eve = mint_token(settings, subject="eve", ttl_s=600)
    async with running_gateway(settings, bundle=SlowTargetedBundle()) as gw:
        c = await Client.connect(gw.base_url, {"bearer_token": bob})
        await c.read_until(lambda c: c.of("session_info"))
        bob_session = c.of("session_info")[0][0]["session_id"]
        await c.ws.send('42["chat_message",{"message":"secret"}]')
        await c.read_until(lambda c: c.of("chat_complete"), timeout=20)
        await c.ws.aclose()
        stolen = await Client.connect(gw.base_url, {"bearer_token": eve, "pid": c.reply["pid"], "offset": "0"})
        await stolen.read_until(lambda c: c.of("session_info"))
        with trio.move_on_after(0.5):
            await stolen.read_until(lambda c: False)
        await stolen.ws.aclose()
        # bob again, no offset (no event seen on this pid): resumes from where the pid was issued
        back = await Client.connect(gw.base_url, {"bearer_token": bob, "pid": c.reply["pid"]})
        await back.read_until(lambda c: c.of("chat_complete"), timeout=10)
        await back.ws.aclose()
    assert stolen.reply["pid"] != c.reply["pid"] and stolen.reply["sid"] != c.reply["sid"]
    info = stolen.of("session_info")[0][0]
    assert info["recovered"] is False and info["session_id"] != bob_session and info["user_id"] == "eve"
    assert not [n for n, _ in stolen.events if n.startswith("chat_")], "nothing of bob's reached eve"
    assert back.reply == c.reply and back.of("chat_start") and len(back.of("chat_delta")) == TARGETED_DELTAS


async def test_python_socketio_gets_no_pid_and_single_argument_events():
    async with running_gateway(test_settings(), bundle=SlowTargetedBundle()) as gw:
        async def scenario(sio, res):
            await res.wait_for(lambda r: r.of("session_info"))
            await sio.call("chat_message", {"message": "py"}, timeout=10)
            await res.wait_for(lambda r: r.of("chat_complete"), timeout=20)

        res = await run_sio(gw.base_url, scenario, transports=["websocket"])
    assert res.of("chat_complete") and all(isinstance(d, dict) for _, d in res.events), res.events[:3]
