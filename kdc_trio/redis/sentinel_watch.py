"""`SentinelWatch`: listens to the Sentinels' failover events, so a process's connections leave a
master that is being replaced before the replica is promoted, not once the old master dies.

Why: a master can be replaced while it is still up (`SENTINEL FAILOVER`, a partition that heals).
It goes on taking writes until the Sentinels get round to demoting it — seconds — and every write
it takes after the promotion is lost when it resyncs as a replica of the new master. Measured
(tests/redis/test_sentinel.py, a manual failover with writes going on): without a watch, 946
acknowledged writes lost; following `+switch-master` alone, 15-186 (those before the switch was
told, 0.3-1.3 s after the promotion); holding at `+failover-state-send-slaveof-noone`, 0.

One `PubSub` connection to every Sentinel (only the Sentinel leading a failover announces its
steps; the others tell the switch later), PINGed and reconnected with backoff like the relay's,
on the connector the process's clients share:
- `+failover-state-send-slaveof-noone` for our master (the leader is about to promote a replica):
  `connector.hold_for_failover()` — every open connection is stale, new ones wait for the switch;
- `+switch-master` for our master: `connector.switch_to(new address)` — the hold ends, and new
  connections go to the new master;
- `-failover-abort-slave-timeout`: the promotion was given up, the hold ends.
After each (re)subscription the Sentinels are asked once, for a switch told while nobody listened.
"""

from __future__ import annotations

import logging

import trio

from kdc_trio.redis.pubsub import Batch, PubSub
from kdc_trio.redis.retry import REDIS_FAILURES, Backoff
from kdc_trio.redis.sentinel import DirectConnector, SentinelConnector

log = logging.getLogger("kdc_trio.redis.sentinel")

SWITCH = "+switch-master"  # "<master> <old ip> <old port> <new ip> <new port>"
PROMOTING = "+failover-state-send-slaveof-noone"  # "slave <ip:port> <ip> <port> @ <master> <ip> <port>"
ABORTED = "-failover-abort-slave-timeout"  # "master <master> <ip> <port>"
CHANNELS = (SWITCH, PROMOTING, ABORTED)
_SWITCH, _PROMOTING, _ABORTED = (c.encode() for c in CHANNELS)  # as a pub/sub batch names them


class SentinelWatch:
    def __init__(self, connector: SentinelConnector, *, ping_interval: float = 5.0, ping_timeout: float = 3.0,
                 backoff_max: float = 5.0) -> None:
        self.connector = connector
        self.backoff_max = backoff_max
        self.switches = 0  # +switch-master messages naming our master (one per Sentinel that tells it)
        self._recheck = trio.Event()
        self._recheck.set()  # once subscribed: a switch before that was not heard
        self.pubsubs = [PubSub(DirectConnector(connector.url.sentinel_url(*addr)), on_batch=self._on_batch,
                               on_reconnect=self._recheck_soon, connect_timeout=connector.url.sentinel_timeout,
                               ping_interval=ping_interval, ping_timeout=ping_timeout, backoff_max=backoff_max)
                        for addr in connector.url.sentinels]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for pubsub in self.pubsubs:
                nursery.start_soon(self._listen, pubsub)
            task_status.started()
            while True:
                await self._recheck.wait()
                self._recheck = trio.Event()
                try:
                    await self.connector.master_address()  # switches the connector if it moved
                except REDIS_FAILURES as exc:
                    log.warning("no Sentinel named the master after the watch (re)connected (%s)", exc)

    async def _listen(self, pubsub: PubSub) -> None:
        """One Sentinel's events, for as long as the process runs: a Sentinel down at start is
        tried again with backoff (PubSub itself reconnects once it was connected)."""
        backoff = Backoff(self.backoff_max)
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(pubsub.run)
                    await pubsub.subscribe(*CHANNELS)
                    self._recheck_soon()
                    backoff.reset()
            except* REDIS_FAILURES as group:
                log.warning("Sentinel watch: %s (next try in <= %.1fs)", group.exceptions[0], self.backoff_max)
            await backoff.sleep()

    def _recheck_soon(self) -> None:
        self._recheck.set()

    def _on_batch(self, batch: Batch) -> None:
        """A batch keeps each channel's order, not the order across channels (redis/pubsub.py):
        when one read tells several kinds of event, aborts are taken first, then promotions, then
        switches. So a read that holds an abort and a promotion ends holding (bounded by
        `failover_hold`; writes to a master being replaced are what is lost otherwise), and a
        switch, the last word of a failover, is always taken last."""
        name = self.connector.url.master
        for data in batch.get(_ABORTED, ()):
            parts = data.decode("utf-8", "replace").split()
            if len(parts) >= 2 and parts[1] == name:
                self.connector.end_hold()
        for data in batch.get(_PROMOTING, ()):
            parts = data.decode("utf-8", "replace").split()
            if len(parts) == 8 and parts[5] == name:
                self.connector.hold_for_failover()
        for data in batch.get(_SWITCH, ()):
            parts = data.decode("utf-8", "replace").split()
            if len(parts) == 5 and parts[0] == name and parts[4].isdigit():
                self.switches += 1
                self.connector.switch_to((parts[3], int(parts[4])))
