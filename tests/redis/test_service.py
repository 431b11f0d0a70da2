"""ServiceCommunicator on a real Redis: host_id tagging, batches per channel, decode once."""

from __future__ import annotations

import httpx
import trio

from kdc_trio.redis.client import RedisClient
from kdc_trio.redis.pubsub import PubSub
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.service import ServiceCommunicator
from tests.support.gateway import running_gateway, test_settings
from tests.support.redis_server import redis_server
from tests.support.sse_client import open_stream


async def test_messages_carry_the_publisher_host_id_and_arrive_in_batches():
    with redis_server() as srv:
        client = RedisClient(srv.url)
        listener = ServiceCommunicator(client, host_id="listener")
        listener.pubsub = PubSub(srv.url, on_batch=listener.on_batch, on_reconnect=listener.on_reconnect)
        speaker = ServiceCommunicator(client, host_id="speaker-1")
        got: list[list[dict]] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.run)
            await listener.listen("svc", got.append)
            await client.pipeline([("PUBLISH", "svc", '{"n": %d}' % i) for i in range(200)])
            await client.execute("PUBLISH", "svc", "not json")
            assert await speaker.publish("svc", {"n": 200}) == 1
            with trio.fail_after(5):
                while sum(map(len, got)) < 201:
                    await trio.sleep(0.01)
            await listener.unlisten("svc")
            # unlisten does not wait for Redis (the UNSUBSCRIBE goes with the writer's next batch),
            # and a command on another connection may overtake it: Redis says when it is done
            with trio.fail_after(5):
                while (await client.execute("PUBSUB", "NUMSUB", "svc"))[1]:
                    await trio.sleep(0.01)
            assert await speaker.publish("svc", {"n": 201}) == 0, "unlisten unsubscribed"
            nursery.cancel_scope.cancel()
        flat = [m for batch in got for m in batch]
        assert [m["n"] for m in flat] == list(range(201))
        assert flat[-1]["host_id"] == "speaker-1"
        assert len(got) < 201, "one call per network read, not per message"
        assert listener.undecodable == 1
        await client.aclose()


async def test_one_message_is_decoded_once_for_all_local_connections_of_a_session():
    with redis_server() as srv:
        settings = test_settings(redis_url=srv.url)
        async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client, \
                trio.open_nursery() as nursery:
            streams = [await open_stream(nursery, client, "/sse/stream?stream_id=s0")]
            sid = streams[0].ready["session_id"]
            for i in (1, 2):
                streams.append(await open_stream(nursery, client, f"/sse/stream?stream_id=s{i}&user_session_id={sid}"))
            key = SessionKey(streams[0].ready["tenant"], streams[0].ready["project"], sid)
            before = gw.bus.received
            for n in range(10):
                await gw.bus.publish(key, event="chat_service", data={"n": n})
            for st in streams:
                await st.wait_event("chat_service", count=10)
            assert gw.bus.received - before == 10, "decoded once per process, not once per connection"
            nursery.cancel_scope.cancel()


def test_a_batch_of_one_channel_and_a_mixed_one_reach_each_listener_in_order():
    service = ServiceCommunicator(None, host_id="h")  # type: ignore[arg-type]
    got: dict[str, list] = {"a": [], "b": [], "j": []}
    calls: list[str] = []

    def listener(name: str):
        return lambda msgs: (calls.append(name), got[name].extend(msgs))

    service._listeners = {name: listener(name) for name in got}
    service._raw = {"a", "b"}
    service.on_batch({b"a": [b"1"]})  # learns the name
    service.on_batch({b"a": [b"%d" % i for i in range(2, 6)]})  # one channel: one call, as it came
    service.on_batch({b"a": [b"6", b"7"], b"c": [b"unsubscribed"], b"b": [b"x", b"y"]})
    service.on_batch({b"b": [b"z", b"w"], "a": [b"8"]})  # a channel named by text (the compat backend)
    service.on_batch({b"j": [b'{"n":1}', b"not json", b'{"n":2}']})  # not raw: decoded, the bad one dropped
    service.on_batch({b"j": [b"not json either"]})  # nothing left: no call
    assert got == {"a": [b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8"], "b": [b"x", b"y", b"z", b"w"],
                   "j": [{"n": 1}, {"n": 2}]}
    assert calls == ["a", "a", "a", "b", "b", "a", "j"], "one call per channel per batch"
    assert service.undecodable == 2
