"""`SentinelWatch`: hears `+switch-master` from the Sentinels, so a process's connections leave a
master that was switched away from at once, not only once it dies.

Why: a master can be replaced while it is still up (`SENTINEL FAILOVER`, a partition that heals).
It goes on taking writes until the Sentinels get round to demoting it — seconds — and every write
it takes meanwhile is lost when it resyncs as a replica of the new master. Measured without this
watch (tests/redis/test_sentinel.py, manual failover with writes going on): 946 writes
acknowledged by the old master after the promotion, none of them on the new master.

One subscription per process: a `PubSub` connection to one Sentinel at a time (the next one in
the connector's order when it fails; PINGed, reconnected with backoff like the relay's), on the
connector the process's clients share. Each `+switch-master` naming our master calls
`connector.switch_to(new address)`: every connection opened before is stale from then on (the
command pool closes it when it is next taken or given back; the relay's pub/sub connection
reconnects and fills the gap from the session log). After each (re)subscription the Sentinels
are asked once, for a switch announced while nobody listened.
"""

from __future__ import annotations

import logging

import trio

from kdc_trio.redis.connection import Connection, RedisConnectionError
from kdc_trio.redis.pubsub import Batch, PubSub
from kdc_trio.redis.sentinel import DirectConnector, SentinelConnector

log = logging.getLogger("kdc_trio.redis.sentinel")

SWITCH_CHANNEL = "+switch-master"


class _AnySentinel(DirectConnector):
    """Opens a connection to the first of the connector's Sentinels that accepts one."""

    def __init__(self, connector: SentinelConnector) -> None:
        super().__init__(connector.url.sentinel_url(*connector.url.sentinels[0]))
        self.connector = connector

    async def open(self, *, timeout: float) -> Connection:
        return await self.connector.open_sentinel(timeout=timeout)


class SentinelWatch:
    def __init__(self, connector: SentinelConnector, *, ping_interval: float = 5.0, ping_timeout: float = 3.0,
                 backoff_max: float = 5.0) -> None:
        self.connector = connector
        self.switches = 0  # +switch-master messages naming our master
        self._recheck = trio.Event()
        self._recheck.set()  # once subscribed: a switch before that was not heard
        self.pubsub = PubSub(_AnySentinel(connector), on_batch=self._on_batch, on_reconnect=self._recheck_soon,
                             ping_interval=ping_interval, ping_timeout=ping_timeout, backoff_max=backoff_max)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.pubsub.run)
            await self.pubsub.subscribe(SWITCH_CHANNEL)
            task_status.started()
            while True:
                await self._recheck.wait()
                self._recheck = trio.Event()
                try:
                    await self.connector.master_address()  # switches the connector if it moved
                except RedisConnectionError as exc:
                    log.warning("no Sentinel answered after the watch reconnected (%s)", exc)

    def _recheck_soon(self) -> None:
        self._recheck.set()

    def _on_batch(self, batch: Batch) -> None:
        for _, data in batch:
            # "<master name> <old ip> <old port> <new ip> <new port>"
            parts = data.decode("utf-8", "replace").split()
            if len(parts) == 5 and parts[0] == self.connector.url.master and parts[4].isdigit():
                self.switches += 1
                self.connector.switch_to((parts[3], int(parts[4])))
