"""The pub/sub reader feeds each network read to hiredis in FEED_SIZE pieces (a whole 256 KiB
read fed at once made hiredis move its unparsed rest after every few replies). A read's replies
must come out whole and in order wherever the piece boundaries fall: inside a message, inside a
length header, between a subscribe confirmation and a message."""

from __future__ import annotations

import trio

from kdc_trio.redis.client import RedisClient
from kdc_trio.redis.connection import FEED_SIZE
from kdc_trio.redis.pubsub import PubSub
from tests.redis.backends import backend  # noqa: F401  (a fixture)
from tests.support.redis_server import messages, redis_server


async def test_reads_larger_than_a_piece_yield_every_message_whole_and_in_order():
    # sizes around and across the piece size: tiny, a few hundred bytes, one larger than a piece
    sizes = [1, 7, 300, FEED_SIZE - 30, FEED_SIZE + 1, 3 * FEED_SIZE + 5, 280]
    payloads = [(b"%06d:" % i) + bytes([97 + i % 26]) * sizes[i % len(sizes)] for i in range(3000)]
    with redis_server() as srv:
        client = RedisClient(srv.url)
        batches: list[dict[bytes, list[bytes]]] = []
        pubsub = PubSub(srv.url, on_batch=batches.append)
        async with trio.open_nursery() as nursery:
            await nursery.start(pubsub.run)
            await pubsub.subscribe("a", "b")
            # pipelined: Redis writes many messages per read, of both channels, interleaved
            await client.pipeline([("PUBLISH", "ab"[i % 2], p) for i, p in enumerate(payloads)])
            with trio.fail_after(20):
                while sum(len(messages(b)) for b in batches) < len(payloads):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        await client.aclose()
    for channel in (b"a", b"b"):  # each channel's messages whole and in order (a read groups them per channel)
        got = [d for b in batches for d in b.get(channel, [])]
        assert got == [p for i, p in enumerate(payloads) if b"ab"[i % 2:i % 2 + 1] == channel]
    assert any(len(b) == 2 for b in batches), "a read of both channels is one batch"
    assert len(batches) < len(payloads) / 10, "a batch per network read, not per message or piece"
    assert pubsub.gaps == 0


def _publish_blocking(port: int, channel: bytes, payload: bytes, n: int) -> None:
    import socket

    import hiredis

    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(hiredis.pack_command(("PUBLISH", channel, payload)) * n)
        reader, replies = hiredis.Reader(), 0
        while replies < n:
            reader.feed(sock.recv(65536))
            while reader.gets() is not False:
                replies += 1


async def test_a_backlog_longer_than_the_ping_timeout_is_not_a_lost_connection(backend):
    # The PONG waits in Redis behind every message published before it: a process that reads a
    # burst slower than Redis took it sees no PONG within ping_timeout, yet bytes keep coming.
    # Calling that a lost connection would drop the whole backlog (a gap) for nothing. Both
    # backends (the compat one reads through redis-py, in batches of its own size).
    import time

    payload = b"p" * 2000
    n = 6000
    with redis_server() as srv:
        got = 0

        def slow(batch: dict) -> None:  # a busy relay: ~2.4 s for the whole backlog, however it is cut
            nonlocal got
            k = len(messages(batch))
            got += k
            time.sleep(0.0004 * k)

        async with backend.loop():
            pubsub = backend.pubsub(srv.url, on_batch=slow, ping_interval=0.2, ping_timeout=0.3)
            async with trio.open_nursery() as nursery:
                await nursery.start(pubsub.run)
                await pubsub.subscribe("burst")
                # published from another thread all at once: Redis queues it faster than we read
                await trio.to_thread.run_sync(_publish_blocking, srv.port, b"burst", payload, n)
                with trio.fail_after(30):
                    while got < n:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
    assert pubsub.gaps == 0 and pubsub.pings_missed == 0, (pubsub.gaps, pubsub.pings_missed)
    assert got == n
