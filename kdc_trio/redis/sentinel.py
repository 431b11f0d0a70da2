"""Where a connection goes: straight to one server, or to the master Redis Sentinel names now.

`connector_for(url)` gives `RedisClient` and `PubSub` the object that opens their connections:
a `DirectConnector` for `redis://`, `rediss://` and `unix://`, a `SentinelConnector` for
`redis+sentinel://…/mastername`. Every connection the Sentinel connector opens is resolved
afresh, so the command pool and the pub/sub connection follow a failover by themselves: a
connection lost to a dead master is replaced by one to whichever server the Sentinels name next.

Resolution, as the Sentinel client guidelines describe it:
- ask the Sentinels in turn `SENTINEL GET-MASTER-ADDR-BY-NAME <mastername>`, each within the
  URL's `sentinel_timeout`; the first that answers is asked first next time;
- connect to the address (AUTH, SELECT) and check `ROLE`: a server that is not a master (an old
  master that came back as a replica, named by a Sentinel that has not heard of the failover)
  is closed, the Sentinel that named it goes to the back of the line, and the Sentinels are
  asked again, until the connect deadline;
- while the master named cannot be reached (killed, the failover not over yet) the Sentinels
  are asked again every REASK_PAUSE_S until the connect deadline, so a connection wanted during
  a failover is opened to the new master ~0.1 s after its promotion instead of failing;
- while a Sentinel is promoting a replica (heard by kdc_trio/redis/sentinel_watch.py) new
  connections wait for the switch instead of going to the old master, which would still take
  writes the promotion loses.

A connector counts the master switches it learns of (`epoch`: a resolution naming another
address, or kdc_trio/redis/sentinel_watch.py hearing the Sentinels); a connection opened before
the last one is `stale`, and the pool closes it instead of reusing it. A connection to a master
that is demoted is also dropped by the Sentinel itself (`CLIENT KILL` with the `REPLICAOF`);
should a command still reach it, the `-READONLY` reply makes `RedisClient` close it and try once
more on a freshly resolved connection.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from kdc_trio.redis.connection import Connection, RedisConnectionError, RedisError, RedisTimeoutError
from kdc_trio.redis.url import RedisURL, SentinelURL, is_sentinel_url, parse_redis_url, parse_sentinel_url

log = logging.getLogger("kdc_trio.redis.sentinel")

# Pause before asking the Sentinels again when the server they named cannot be reached or is
# not a master (a failover in progress): short, so a connection follows the promotion within
# ~0.1 s; not a tight loop, which would only load the Sentinels.
REASK_PAUSE_S = 0.1


class Connector(Protocol):
    """Opens connections; `epoch` counts the master switches it has seen, so a connection opened
    before one (`conn.epoch` older) is `stale`: closed instead of reused."""

    epoch: int

    async def open(self, *, timeout: float) -> Connection: ...

    def stale(self, conn: Connection) -> bool: ...

    async def wait_switch(self, epoch: int) -> None: ...


class DirectConnector:
    epoch = 0  # one server: its address never switches

    def __init__(self, url: RedisURL) -> None:
        self.url = url

    async def open(self, *, timeout: float) -> Connection:
        return await Connection.open(self.url, timeout=timeout)

    def stale(self, conn: Connection) -> bool:
        return False

    async def wait_switch(self, epoch: int) -> None:
        await trio.sleep_forever()

    def __repr__(self) -> str:
        return repr(self.url)


class SentinelConnector:
    def __init__(self, url: SentinelURL) -> None:
        self.url = url
        self._order = list(url.sentinels)  # the Sentinel that answered last is asked first
        self.master: tuple[str, int] | None = None  # the last address a Sentinel gave
        self.epoch = 0  # master switches seen (a resolution naming another address, +switch-master)
        self._switched = trio.Event()  # set (and replaced) when the epoch moves or a hold ends
        self._hold_until = 0.0  # trio time: a failover is under way, new connections wait for it
        self.holds = 0
        self.resolutions = 0
        self.not_master = 0  # servers named as master that answered ROLE otherwise

    def __repr__(self) -> str:
        return repr(self.url)

    def switch_to(self, address: tuple[str, int]) -> None:
        """The master is at `address` now: connections opened to another one are stale."""
        if address == self.master:
            return
        log.warning("master %r is %s:%d now (was %s)", self.url.master, *address,
                    "unknown" if self.master is None else "%s:%d" % self.master)
        self._hold_until = 0.0
        if self.master is not None:
            self.epoch += 1
        self.master = address
        self._wake()

    def hold_for_failover(self) -> None:
        """A Sentinel is about to promote a replica (`+failover-state-send-slaveof-noone`): the
        master still answers and would take writes the promotion loses. Every connection open now
        is stale, and new ones wait (up to the URL's `failover_hold`) for the switch to be told."""
        log.warning("a Sentinel is promoting a replica of %r: connections wait for the switch", self.url.master)
        self.holds += 1
        self.epoch += 1
        self._hold_until = trio.current_time() + self.url.failover_hold
        self._wake()

    def end_hold(self) -> None:
        """The failover was given up (`-failover-abort-*`): the master stays where it was."""
        self._hold_until = 0.0
        self._wake()

    def _wake(self) -> None:
        self._switched.set()
        self._switched = trio.Event()

    def stale(self, conn: Connection) -> bool:
        return conn.epoch != self.epoch

    async def wait_switch(self, epoch: int) -> None:
        """Return once the master switched after `epoch` (at once if it already has)."""
        while self.epoch == epoch:
            await self._switched.wait()

    async def master_address(self) -> tuple[str, int]:
        """The master's address, from the first Sentinel that knows it (each within its deadline)."""
        why: list[str] = []
        for addr in list(self._order):
            try:
                reply = await self._ask(addr)
            except (RedisConnectionError, RedisError) as exc:
                why.append(f"{addr[0]}:{addr[1]}: {exc}")
                continue
            if not reply:
                why.append(f"{addr[0]}:{addr[1]}: does not know master {self.url.master!r}")
                continue
            self._order.remove(addr)
            self._order.insert(0, addr)
            self.resolutions += 1
            self.switch_to((reply[0].decode(), int(reply[1])))
            assert self.master is not None
            return self.master
        raise RedisConnectionError(f"no Sentinel named master {self.url.master!r}: {'; '.join(why)}")

    async def _ask(self, addr: tuple[str, int]) -> list[bytes] | None:
        limit = self.url.sentinel_timeout
        with trio.move_on_after(limit):
            conn = await Connection.open(self.url.sentinel_url(*addr), timeout=limit)
            try:
                return await conn.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.url.master)
            finally:
                await conn.aclose()
        raise RedisTimeoutError(f"no answer within {limit}s")

    async def open(self, *, timeout: float) -> Connection:
        """A connection to the server that is master now (named by a Sentinel, checked by ROLE).

        While no Sentinel answers, or the master named cannot be reached (it died and the
        failover is not over: the Sentinels name it until the promotion), or is not a master,
        the Sentinels are asked again every REASK_PAUSE_S until `timeout`: a connection wanted
        during a failover waits for the new master instead of failing at once."""
        why = "nothing tried"
        with trio.move_on_after(timeout):
            while True:
                while trio.current_time() < self._hold_until:  # a promotion under way
                    why = "a failover under way"
                    with trio.move_on_at(self._hold_until):
                        await self._switched.wait()
                try:
                    conn = await self._open_master(timeout)
                    if conn is not None:
                        return conn
                    why = "the server named is not a master"
                except RedisConnectionError as exc:
                    why = str(exc)
                await trio.sleep(REASK_PAUSE_S)
        raise RedisTimeoutError(f"no master {self.url.master!r} reachable through Sentinel within {timeout}s "
                                f"(last: {why})")

    async def _open_master(self, timeout: float) -> Connection | None:
        host, port = await self.master_address()
        epoch = self.epoch  # a switch while this connection opens makes it stale at once
        conn = await Connection.open(self.url.master_url(host, port), timeout=timeout)
        conn.epoch = epoch
        try:
            role = await conn.execute("ROLE")
        except BaseException:
            await conn.aclose()
            raise
        if role and role[0] == b"master":
            return conn
        await conn.aclose()
        self.not_master += 1
        self._order.append(self._order.pop(0))  # it answered first: its view is stale
        log.warning("%s:%d, named master %r, is a %s: asking the Sentinels again",
                    host, port, self.url.master, role[0].decode() if role else "?")
        return None


def connector_for(url: str | RedisURL | SentinelURL | Connector) -> Connector:
    """The connector of a URL; a connector given is used as it is (clients of one process share
    theirs, so a switch one of them sees makes every one's old connections stale)."""
    if isinstance(url, (DirectConnector, SentinelConnector)):
        return url
    if isinstance(url, str):
        url = parse_sentinel_url(url) if is_sentinel_url(url) else parse_redis_url(url)
    if isinstance(url, SentinelURL):
        return SentinelConnector(url)
    return DirectConnector(url)
