"""ServiceCommunicator: low-level JSON publish/subscribe between processes over Redis.

Every message it publishes is tagged with the publishing process's `host_id`. On the receiving
side one pub/sub connection carries every channel this process listens to; each message is
decoded once, and each channel's listener gets the channel's messages of one network read as
one list (the relay's session subscriptions sit on top of this, see redis_bus.py).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import Any, Callable, Collection, Protocol

import trio

from kdc_trio.redis.commands import Commands, text
from kdc_trio.relay.message import dumps

log = logging.getLogger("kdc_trio.service")

Listener = Callable[[list[Any]], None]
# Told which channels had a gap in their delivery (None: all of them, the one connection came back).
ReconnectHook = Callable[[Collection[str] | None], None]
# Channel names whose text on_batch keeps (bytes -> str), not decoded per message: one per
# subscribed session; past this many it starts over.
CHANNEL_NAMES = 65_536


class PubSubLike(Protocol):
    """A pub/sub connection (kdc_trio.redis.pubsub.PubSub, the compat backend's, or a Redis
    Cluster's kdc_trio.redis.sharded_pubsub.ShardedPubSub)."""

    async def subscribe(self, *channels: str) -> None: ...

    async def unsubscribe(self, *channels: str) -> None: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...


def default_host_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ServiceCommunicator:
    def __init__(self, redis: Commands, *, host_id: str | None = None, sharded: bool = False) -> None:
        self.redis = redis
        # Redis Cluster: channels are sharded (SPUBLISH to the channel's shard, not PUBLISH to all)
        self.publish_command = "SPUBLISH" if sharded else "PUBLISH"
        self.host_id = host_id or default_host_id()
        self.pubsub: PubSubLike | None = None  # None in a process that only publishes
        self._listeners: dict[str, Listener] = {}
        self._raw: set[str] = set()  # channels whose listener takes the published bytes
        self._reconnect_hooks: list[ReconnectHook] = []
        self._gap_hooks: list[ReconnectHook] = []
        self.undecodable = 0
        self._names: dict[bytes, str] = {}  # a channel's name as Redis sends it -> as text

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.pubsub is None:
            task_status.started()
            return
        await self.pubsub.run(task_status=task_status)

    async def publish(self, channel: str, message: dict[str, Any]) -> int:
        """PUBLISH the JSON of `message` plus `host_id`; returns how many connections got it."""
        return int(await self.redis.execute(self.publish_command, channel, dumps({**message, "host_id": self.host_id})))

    async def listen(self, channel: str, listener: Listener, *, raw: bool = False) -> None:
        """Deliver the channel's messages to `listener` (one per channel), decoded from JSON or,
        with `raw`, as published (the listener decodes them itself); returns once subscribed."""
        if self.pubsub is None:
            raise RuntimeError("this process does not listen to Redis (no pub/sub connection)")
        self._listeners[channel] = listener
        if raw:
            self._raw.add(channel)
        else:
            self._raw.discard(channel)
        try:
            await self.pubsub.subscribe(channel)
        except BaseException:
            self._listeners.pop(channel, None)
            self._raw.discard(channel)
            raise

    async def unlisten(self, channel: str) -> None:
        self._raw.discard(channel)
        if self._listeners.pop(channel, None) is not None and self.pubsub is not None:
            await self.pubsub.unsubscribe(channel)

    def on_reconnect_call(self, hook: ReconnectHook) -> None:
        self._reconnect_hooks.append(hook)

    def on_gap_call(self, hook: ReconnectHook) -> None:
        """`hook(channels)` when delivery of `channels` stops (None: all), before the messages of
        the connection that replaces it are handed on: the owner holds them until it has filled
        the gap (`on_reconnect_call`'s hook follows once the channels are re-subscribed)."""
        self._gap_hooks.append(hook)

    # ---- from the pub/sub connection ----------------------------------------------------------
    def on_batch(self, batch: dict[Any, list[Any]]) -> None:
        """One read's messages, per channel (kdc_trio.redis.pubsub.Batch): each listened channel's
        go to its listener in one call, as published (`raw`) or decoded from JSON."""
        names = self._names
        for channel_raw, payloads in batch.items():
            channel = names.get(channel_raw) if type(channel_raw) is bytes else None
            if channel is None:
                channel = text(channel_raw)
                if type(channel_raw) is bytes:
                    if len(names) >= CHANNEL_NAMES:
                        names.clear()
                    names[channel_raw] = channel
            listener = self._listeners.get(channel)
            if listener is None:
                continue  # unsubscribed while its messages were in flight
            if channel in self._raw:
                listener(payloads)
                continue
            objs = []
            for payload in payloads:
                try:
                    objs.append(json.loads(payload))
                except ValueError as exc:
                    self.undecodable += 1
                    log.warning("undecodable message on %s dropped: %s", channel, exc)
            if objs:
                listener(objs)

    def on_gap(self, channels: Collection[str] | None = None) -> None:
        """Pub/sub stopped delivering `channels` (None: every channel); a reconnect follows."""
        for hook in self._gap_hooks:
            hook(channels)

    def on_reconnect(self, channels: Collection[str] | None = None) -> None:
        """Pub/sub came back after a gap: for `channels` (None: every channel)."""
        for hook in self._reconnect_hooks:
            hook(channels)
