"""The Redis-backed parts, built from the settings: one client pool, the pub/sub connection,
the bus, the session store, the conversation-status store, the turn queue and the rate limiter.

Composition code beside `gateway.py`: `open_gateway` builds a Redis-backed gateway from
`open_redis_parts(listen=True)`; `open_redis_parts(listen=False)` is what a worker process
(`kdc-trio worker`) needs: it publishes, it never subscribes.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from kdc_trio.config import Settings
from kdc_trio.processor.redis_conv_status import RedisConvStatusStore
from kdc_trio.processor.redis_queue import RedisTurnQueue
from kdc_trio.protect.redis_ratelimit import RedisRateLimiter
from kdc_trio.redis.client import RedisClient
from kdc_trio.redis.cluster import ClusterClient
from kdc_trio.redis.pubsub import PubSub
from kdc_trio.redis.sentinel import SentinelConnector, connector_for
from kdc_trio.redis.sentinel_watch import SentinelWatch
from kdc_trio.redis.sharded_pubsub import ShardedPubSub
from kdc_trio.redis.url import is_cluster_url, is_sentinel_url
from kdc_trio.relay.redis_bus import RedisBus
from kdc_trio.relay.service import ServiceCommunicator
from kdc_trio.sessions.redis_store import RedisSessionStore

# Connections one process opens for commands (publishes, sessions, the queue's writes).
COMMAND_CONNECTIONS = 32


@dataclass
class RedisParts:
    client: Any
    bus: RedisBus
    store: RedisSessionStore
    conv_store: RedisConvStatusStore
    queue: RedisTurnQueue
    limiter: RedisRateLimiter


def _clients(settings: Settings) -> tuple[Any, Any, Callable[..., Any], Callable[..., Any] | None]:
    """(command client, blocking-read client, pub/sub factory, Sentinel watch or None) of the
    configured backend. The native backend takes `redis+sentinel://` too: its clients share one
    connector (each connection goes to the current master) and the watch that follows switches."""
    url = settings.redis_url
    assert url
    if is_cluster_url(url):
        return _cluster_clients(settings, url)
    if settings.redis_backend == "compat":
        if is_sentinel_url(url):
            raise ValueError("REDIS_URL redis+sentinel://… needs KDC_REDIS_BACKEND=native (the compat backend "
                             "reads only redis://, rediss:// and unix:// URLs)")
        from kdc_trio.redis.compat import CompatClient, CompatPubSub

        return (CompatClient(url, max_connections=COMMAND_CONNECTIONS), CompatClient(url, max_connections=2),
                partial(CompatPubSub, url), None)
    if settings.redis_backend != "native":
        raise ValueError(f"KDC_REDIS_BACKEND must be native or compat, not {settings.redis_backend!r}")
    connector = connector_for(url)
    watch = None
    if isinstance(connector, SentinelConnector):
        watch = SentinelWatch(connector, ping_interval=settings.pubsub_ping_interval_s,
                              ping_timeout=settings.pubsub_ping_timeout_s,
                              backoff_max=settings.redis_retry_max_ms / 1000).run
    return (RedisClient(connector, max_connections=COMMAND_CONNECTIONS), RedisClient(connector, max_connections=2),
            partial(PubSub, connector), watch)


def _cluster_clients(settings: Settings, url: str) -> tuple[Any, Any, Callable[..., Any], None]:
    """`redis+cluster://`: the native cluster client (commands routed by slot, MOVED/ASK followed)."""
    if settings.redis_backend != "native":
        raise ValueError("a redis+cluster:// REDIS_URL needs KDC_REDIS_BACKEND=native")
    client = ClusterClient(url, max_connections=COMMAND_CONNECTIONS)
    read_client = ClusterClient(url, max_connections=2)
    # The sharded relay: one SSUBSCRIBE connection per master, on the command client's slot map.
    return client, read_client, partial(ShardedPubSub, client), None


def _is_cluster(settings: Settings) -> bool:
    return bool(settings.redis_url) and is_cluster_url(settings.redis_url or "")


async def open_redis_parts(settings: Settings, stack: AsyncExitStack, *, listen: bool) -> RedisParts:
    if settings.redis_backend == "compat":  # redis-py runs on asyncio: open its loop for every task below
        from kdc_trio.redis.compat import open_compat_loop

        await stack.enter_async_context(open_compat_loop())
    client, read_client, pubsub_factory, watch = _clients(settings)
    stack.push_async_callback(client.aclose)
    stack.push_async_callback(read_client.aclose)
    await client.execute("PING")  # fail at start, with the reason, when Redis is unreachable
    s = settings
    cluster = _is_cluster(s)  # Redis Cluster: sharded pub/sub (SSUBSCRIBE / SPUBLISH on the channel's shard)
    service = ServiceCommunicator(client, sharded=cluster)
    if listen:
        service.pubsub = pubsub_factory(on_batch=service.on_batch, on_reconnect=service.on_reconnect,
                                        on_gap=service.on_gap,
                                        ping_interval=s.pubsub_ping_interval_s, ping_timeout=s.pubsub_ping_timeout_s,
                                        backoff_max=s.redis_retry_max_ms / 1000)
    bus = RedisBus(client, service, channel_prefix=s.relay_prefix, key_prefix=s.redis_prefix,
                   log_size=s.session_log_size, log_ttl_s=s.session_log_ttl_s, seq_ttl_s=s.session_ttl_s,
                   log_session_bytes=s.session_log_bytes, log_budget_bytes=s.session_log_budget_bytes, watch=watch,
                   cluster=cluster, publish_command="SPUBLISH" if cluster else "PUBLISH")
    queue = RedisTurnQueue(client, read_redis=read_client, prefix=s.redis_prefix, maxlen=s.turn_queue_size,
                           lease_ms=s.turn_lease_ms, inline_bytes=s.redis_inline_attachment_bytes,
                           attachment_ttl_s=s.redis_attachment_ttl_s, dead_letter_size=s.turn_dead_letter_size,
                           backoff_max_s=s.redis_retry_max_ms / 1000)
    return RedisParts(client=client, bus=bus, queue=queue, limiter=RedisRateLimiter(client, prefix=s.redis_prefix),
                      store=RedisSessionStore(client, prefix=s.redis_prefix, ttl_s=s.session_ttl_s),
                      conv_store=RedisConvStatusStore(client, prefix=s.redis_prefix, ttl_s=s.session_ttl_s,
                                                      poll_s=s.continuation_poll_ms / 1000))

