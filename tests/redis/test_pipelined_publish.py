"""Pipelined publishing through Redis (relay/pipelined_poster.py), on a real Redis: one producer
keeps many events in flight, in order, with Redis' seqs; a failure is never silent; the window
bounds what is unconfirmed; a stopped batcher falls back to waiting publishes."""

from __future__ import annotations

import json
import traceback
from contextlib import AsyncExitStack

import pytest
import trio

from kdc_trio.config import Settings
from kdc_trio.errors import unavailable
from kdc_trio.gateway_redis import open_redis_parts
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.pipelined_poster import PipelinedPoster
from tests.support.redis_server import redis_server

KEY = SessionKey("t", "p", "sess-pipe")


async def logged(bus, key=KEY) -> list[dict]:
    return [m.data for m in (await bus.history(key, 0)).messages]


async def open_bus(stack: AsyncExitStack, url: str, nursery: trio.Nursery):
    s = Settings.from_env({"REDIS_URL": url, "KDC_REDIS_RETRY_MAX_MS": "50"})
    parts = await open_redis_parts(s, stack, listen=False)
    await nursery.start(parts.bus.run)
    return parts.bus


async def test_one_producer_many_events_in_flight_in_order_with_redis_seqs():
    with redis_server() as srv:
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            bus = await open_bus(stack, srv.url, nursery)
            other = SessionKey("t", "p", "sess-other")
            await bus.publish(other, event="chat_delta", data={"n": -1})  # another session's seq
            poster = bus.poster(64)
            assert isinstance(poster, PipelinedPoster)
            datas = [{"n": i, "seq": "stale"} for i in range(600)]
            for i, d in enumerate(datas):
                assert await poster.post(KEY, event="chat_delta", data=d, target_sid="s1") is None
                assert poster.pending <= 64, "the window bounds what is unconfirmed"
                if i == 300:
                    await poster.post(other, event="chat_delta", data={"n": -2})
            await poster.flush()
            assert poster.pending == 0 and poster.confirmed == 601
            assert [d["seq"] for d in datas] == list(range(1, 601)), "each envelope got its Redis seq"
            log = await logged(bus)
            assert [m["n"] for m in log] == list(range(600)) and [m["seq"] for m in log] == list(range(1, 601))
            assert [m["n"] for m in await logged(bus, other)] == [-1, -2]
            # fewer script calls than events: consecutive events of the session shared calls
            assert bus.publisher.calls < 600 / 4, bus.publisher.calls
            nursery.cancel_scope.cancel()


async def test_the_published_text_is_the_relay_wire_format():
    with redis_server() as srv:
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            bus = await open_bus(stack, srv.url, nursery)
            poster = bus.poster(8)
            await poster.post(KEY, event="chat_step", data={})
            await poster.post(KEY, event="chat_delta", data={"text": "é \"q\"", "nested": {"a": [1, 2]}}, target_sid="x")
            await poster.flush()
            raw = await bus.redis.execute("LRANGE", bus._log_key(KEY), 0, -1)
            first, second = (json.loads(r) for r in raw)
            assert first["seq"] == 1 and first["data"] == {"seq": 1} and first["event"] == "chat_step"
            assert second["seq"] == 2 and second["target_sid"] == "x"
            assert second["data"] == {"seq": 2, "text": "é \"q\"", "nested": {"a": [1, 2]}}
            nursery.cancel_scope.cancel()


async def test_a_redis_failure_reaches_the_producer_and_later_events_wait_for_it():
    with redis_server() as srv:
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            bus = await open_bus(stack, srv.url, nursery)
            poster = bus.poster(1024)
            for i in range(5):
                await poster.post(KEY, event="chat_delta", data={"n": i})
            await poster.flush()
            srv.kill()
            with pytest.raises(Exception) as caught:
                with trio.fail_after(20):
                    for i in range(5, 100_000):
                        await poster.post(KEY, event="chat_delta", data={"n": i})
                        await trio.sleep(0.001)
            assert unavailable(caught.value), caught.value
            depths = []
            for _ in range(20):  # a producer that catches and posts on: the same error, its traceback not growing
                with pytest.raises(Exception) as more:
                    await poster.post(KEY, event="chat_delta", data={"n": "more"})
                assert more.value is caught.value
                depths.append(len(list(traceback.walk_tb(more.value.__traceback__))))
            assert len(set(depths)) == 1, depths
            # told at the next post; flush tells it again until the owner has seen it there
            with pytest.raises(Exception) as again:
                await poster.flush()
            assert again.value is caught.value
            await poster.flush()  # told once: the poster is usable again
            srv.start()
            with trio.fail_after(20):
                while True:  # Redis is back: posting works again (after the client reconnects)
                    try:
                        await poster.post(KEY, event="chat_delta", data={"n": "after"})
                        await poster.flush()
                        break
                    except Exception as exc:
                        assert unavailable(exc), exc
                        await trio.sleep(0.05)
            seq = await bus.publish(KEY, event="chat_delta", data={"n": "waited"})
            log = await logged(bus)
            assert log[-1]["n"] == "waited" and log[-1]["seq"] == seq
            nursery.cancel_scope.cancel()


async def test_without_the_batcher_running_a_post_waits_and_returns_its_seq():
    with redis_server() as srv:
        async with AsyncExitStack() as stack:
            s = Settings.from_env({"REDIS_URL": srv.url})
            bus = (await open_redis_parts(s, stack, listen=False)).bus  # bus.run not started
            poster = bus.poster(16)
            assert await poster.post(KEY, event="chat_delta", data={"n": 1}) == 1
            assert await poster.post(KEY, event="chat_delta", data={"n": 2}) == 2
            await poster.flush()
            assert poster.confirmed == 2


async def test_a_bundle_run_is_pipelined_and_flushed_by_the_runner():
    """Through the Processor: emits return None while the run is pipelined, every event is in
    Redis when the turn is told, and the communicator counts what Redis confirmed."""
    from kdc_trio.processor.conv_status import MemoryConvStatusStore
    from kdc_trio.processor.queue import MemoryTurnQueue
    from kdc_trio.processor.runner import Processor
    from tests.redis.test_stores import make_turn

    returned: list = []

    class Many:
        async def run(self, turn, comm):
            for i in range(300):
                returned.append(await comm.delta(f"d{i}", index=i))

    with redis_server() as srv:
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            bus = await open_bus(stack, srv.url, nursery)
            s = Settings.from_env({"REDIS_URL": srv.url})
            proc = Processor.from_settings(s, queue=MemoryTurnQueue(10), bundle=Many(), publish=bus.publish,
                                           conv_store=MemoryConvStatusStore(), bus=bus)
            turn = make_turn()
            await proc.run_turn(turn)
            assert returned == [None] * 300
            log = await logged(bus, turn.key)
            deltas = [m for m in log if m.get("type") == "chat.delta"]
            assert [d["delta"]["text"] for d in deltas] == [f"d{i}" for i in range(300)]
            assert log[-1]["type"] == "conv.status", "the end is told after every delta"
            assert proc.completed == 1
            nursery.cancel_scope.cancel()


async def test_answered_events_are_freed_without_the_cyclic_collector():
    """Once Redis answered, a call's events (and their envelopes) go by reference counting: left
    in a cycle, a turn's envelopes outlived their publish until a collection of the older
    generations walked them all."""
    import gc

    from kdc_trio.relay.pipelined_poster import _Events

    with redis_server() as srv:
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            bus = await open_bus(stack, srv.url, nursery)
            poster = bus.poster(64)
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for i in range(200):
                    await poster.post(KEY, event="chat_delta", data={"n": i})
                await poster.flush()
                gc.collect()
                cyclic = [o for o in gc.garbage if isinstance(o, _Events)]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
            assert poster.confirmed == 200
            assert cyclic == [], f"{len(cyclic)} answered calls were left to the cyclic collector"
            nursery.cancel_scope.cancel()


async def test_a_call_passes_its_head_once_and_a_new_name_or_target_starts_the_next_call():
    from kdc_trio.relay.message import RelayMessage

    # events interleaved over names and targets: each keeps its place, its seq and its own head
    kinds = [("chat_delta", None)] * 5 + [("chat_step", None), ("chat_delta", "sid-1"), ("chat_delta", "sid-1"),
                                          ("chat_delta", None), ("chat_complete", "sid-2")] + [("chat_delta", None)] * 5
    with redis_server() as srv:
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            bus = await open_bus(stack, srv.url, nursery)
            poster = bus.poster(1024)

            class NeverDue:  # post without yielding: the batcher sends nothing until flush
                def due(self) -> bool:
                    return False

            poster._yield = NeverDue()
            calls_before = bus.publisher.calls
            datas = [{"i": i, "text": "é\n\"q\""} for i in range(len(kinds))]
            for (event, target), d in zip(kinds, datas):
                await poster.post(KEY, event=event, data=d, target_sid=target)
            await poster.flush()
            assert [d["seq"] for d in datas] == list(range(1, len(kinds) + 1))
            # one call per run of equal (name, target): 6 runs here
            calls = bus.publisher.calls - calls_before
            assert calls == 6, calls
            raws = await bus.redis.execute("LRANGE", bus._log_key(KEY), 0, -1)
            errors: list = []
            got = RelayMessage.from_raws(list(raws), errors.append)
            assert not errors
            assert [(m.event, m.target_sid, m.seq) for m in got] == \
                [(e, t, i) for i, (e, t) in enumerate(kinds, start=1)]
            assert [json.loads(m.data_json()) for m in got] == [{**d} for d in datas]
            for raw in raws:  # plain JSON with the same keys: what KDCube's subscribers read
                obj = json.loads(raw)
                assert set(obj) == {"seq", "fmt", "event", "target_sid", "session_id", "timestamp", "host_id", "data"}
                assert obj["data"]["seq"] == obj["seq"] and obj["session_id"] == KEY.session_id
            # a call's events share its head, timestamp included
            assert len({m.timestamp for m in got[:5]}) == 1 and len({m.timestamp for m in got[-5:]}) == 1
            nursery.cancel_scope.cancel()


async def test_what_orjson_refuses_is_published_as_json_too():
    with redis_server() as srv:
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            bus = await open_bus(stack, srv.url, nursery)
            poster = bus.poster(8)
            odd = [{"big": 2**70}, {1: "int key"}, {"lone": "\ud800 surrogate"}, {}]
            for d in odd:
                await poster.post(KEY, event="chat_step", data=d)
            await poster.flush()
            raws = await bus.redis.execute("LRANGE", bus._log_key(KEY), 0, -1)
            got = [json.loads(r)["data"] for r in raws]
            assert got == [{"seq": 1, "big": 2**70}, {"seq": 2, "1": "int key"}, {"seq": 3, "lone": "\ud800 surrogate"},
                           {"seq": 4}]
            nursery.cancel_scope.cancel()
