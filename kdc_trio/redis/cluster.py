"""`ClusterClient`: the `RedisClient` interface over a Redis Cluster (`redis+cluster://…`).

- One `RedisClient` pool per node, opened on demand; the slot map (`slots.SlotMap`) is asked of
  the masters together (`CLUSTER SHARDS`, or `CLUSTER SLOTS` on servers without it), then of
  every other node seen and the URL's seeds if some slots' owners did not speak; the answers
  are merged, each node believed about its own slots (`slots.merge_views`), so one node that
  has not heard of a change yet does not turn the map back and forth.
- Every command goes to the master of its keys' slot (`keyspec.command_keys`); a command,
  script or `MULTI … EXEC` block whose keys span slots is refused here with a `CROSSSLOT`
  `RedisError` naming the command (nothing is sent). Keyless commands go to any master;
  `SCRIPT`, `FLUSHDB`, `FLUSHALL`, `KEYS`, `DBSIZE` go to every master.
- A pipeline is split by node, the parts sent concurrently, the replies put back in call order.
- `MOVED` → that slot is re-pointed at once, a full map refresh follows (at most one per
  `REFRESH_MIN_INTERVAL_S`, one in flight for all callers), the command is sent again.
  `ASK` → `ASKING` + the command on the node named, this once. `CLUSTERDOWN` / `TRYAGAIN`
  (a failover or a migration under way: nothing ran) → back off, refresh, try again.
- A node that cannot be reached (nothing was sent) → refresh the map from any reachable node,
  back off, try again — all within the call's deadline (`command_timeout`). A connection lost
  mid-exchange is not retried (the command may have run), as with `RedisClient`; the map is
  refreshed for the next call. The call raises `PartialPipelineError` (a RedisConnectionError)
  whose `replies` keep what the other nodes answered: their commands ran, and a caller that
  tracks calls one by one (`ScriptBatcher`: one publish per call) fails only the lost ones.

For the sharded pub/sub layer: `slot_of`, `master_for_slot`, `node_url`, `refresh`,
`map_version` / `wait_map_changed`, `add_map_listener` (see each).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import trio

from kdc_trio.redis.client import RedisClient
from kdc_trio.redis.connection import PartialPipelineError, RedisConnectFailed, RedisConnectionError, RedisError, \
    RedisTimeoutError
from kdc_trio.redis.keyspec import BROADCAST, UnknownCommand, command_keys, command_name
from kdc_trio.redis.retry import Backoff
from kdc_trio.redis.slots import SLOTS, Address, Redirect, SlotMap, claimed_slots, key_slot, merge_views, \
    parse_cluster_shards, parse_cluster_slots, parse_redirect
from kdc_trio.redis.url import ClusterURL, RedisURL, parse_cluster_url

log = logging.getLogger("kdc_trio.redis.cluster")

# Redirections one command follows before giving up: a slot bounces at most a few times while
# it migrates; more means the nodes disagree (a broken cluster), not a move under way.
MAX_REDIRECTS = 16
# Unforced map reloads at most this often (a migration answers many commands with MOVED at
# once). A forced reload always asks the nodes (callers retrying together share one reload in
# flight, and back off between tries): a caller that forces one has seen the map is wrong.
REFRESH_MIN_INTERVAL_S = 0.25
# Pause between tries while the cluster cannot serve a slot (failover, TRYAGAIN); it doubles.
RETRY_BACKOFF_MAX_S = 0.5
# A node's exchange within a pipeline ends at this share of the pipeline's deadline, so one node
# that does not answer cannot take the other nodes' replies down with it.
NODE_DEADLINE_SHARE = 0.9
# How long the nodes asked together may take to answer CLUSTER SHARDS (one that has not
# answered by then is left out of this reload).
MAP_QUERY_TIMEOUT_S = 2.0
# Error replies that mean "not run, the cluster is moving": safe to send again.
RETRYABLE = ("CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING")


@dataclass(eq=False)
class _Unit:
    """One command, or one MULTI … EXEC block, routed as a whole."""

    start: int
    commands: list[Sequence[Any]]
    slot: int | None = None
    ask: Address | None = None
    redirects: int = 0
    replies: list[Any] = field(default_factory=list)


class ClusterClient:
    def __init__(self, url: str | ClusterURL, *, max_connections: int = 16, connect_timeout: float = 5.0,
                 command_timeout: float = 10.0) -> None:
        self.url = parse_cluster_url(url) if isinstance(url, str) else url
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.slot_map: SlotMap | None = None
        self.map_version = 0  # +1 whenever the slot map changes
        self._nodes: dict[Address, RedisClient] = {}
        self._known: dict[Address, None] = dict.fromkeys(self.url.seeds)  # every node ever seen, in order
        self._refreshing: trio.Event | None = None
        self._last_refresh = -math.inf
        self._map_changed = trio.Event()
        self._listeners: list[Callable[[SlotMap], None]] = []
        self.moved = 0
        self.asked = 0
        self.refreshes = 0
        self.retries = 0

    # ---- the map --------------------------------------------------------------------------
    @staticmethod
    def slot_of(key: str | bytes) -> int:
        """The hash slot of a key or a shard channel."""
        return key_slot(key)

    def master_for_slot(self, slot: int) -> Address | None:
        """The master serving `slot` in the current map (None: no map yet, or the slot is uncovered)."""
        return self.slot_map.owner(slot) if self.slot_map else None

    def node_url(self, address: Address) -> RedisURL:
        """A node's URL with the cluster's credentials and TLS (for a connection of one's own)."""
        return self.url.node(*address)

    def node(self, address: Address) -> RedisClient:
        """The command pool of one node (opened on demand)."""
        client = self._nodes.get(address)
        if client is None:
            client = self._nodes[address] = RedisClient(
                self.node_url(address), max_connections=self.max_connections, connect_timeout=self.connect_timeout,
                command_timeout=self.command_timeout)
        return client

    def add_map_listener(self, listener: Callable[[SlotMap], None]) -> None:
        """Call `listener(new_map)` (synchronously, must not block) whenever the map changes."""
        self._listeners.append(listener)

    def remove_map_listener(self, listener: Callable[[SlotMap], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def wait_map_changed(self, version: int) -> int:
        """Wait until `map_version` differs from `version`; returns the new version."""
        await trio.lowlevel.checkpoint()
        while self.map_version == version:
            await self._map_changed.wait()
        return self.map_version

    def note_moved(self, slot: int, address: Address) -> None:
        """A node answered `MOVED slot address` (to a command, or to an SSUBSCRIBE of the pub/sub
        layer): re-point that slot now, before any reload (listeners hear of it)."""
        if self.slot_map is not None:
            self._set_map(self.slot_map.with_owner(slot, address))

    def _set_map(self, new: SlotMap) -> None:
        for shard in new.shards:
            self._known.update(dict.fromkeys((shard.master, *shard.replicas)))
        if new == self.slot_map:
            return
        self.slot_map = new
        self.map_version += 1
        changed, self._map_changed = self._map_changed, trio.Event()
        changed.set()
        for listener in list(self._listeners):
            try:
                listener(new)
            except Exception:
                log.exception("a cluster map listener failed")

    async def refresh(self, *, force: bool = False) -> SlotMap:
        """Reload the slot map from any reachable node. Concurrent callers share one reload; without
        `force`, a map loaded within `REFRESH_MIN_INTERVAL_S` is kept. Raises RedisConnectionError
        when no node answers."""
        if self._refreshing is not None:
            await self._refreshing.wait()
            if self.slot_map is None:
                raise RedisConnectionError("no Redis Cluster node answered CLUSTER SHARDS")
            return self.slot_map
        if not force and self.slot_map is not None \
                and trio.current_time() - self._last_refresh < REFRESH_MIN_INTERVAL_S:
            return self.slot_map
        self._refreshing = done = trio.Event()
        try:
            new = await self._load_map()
            self.refreshes += 1
            self._set_map(new)
            return new
        finally:
            self._last_refresh = trio.current_time()
            self._refreshing = None
            done.set()

    def _candidates(self) -> list[Address]:
        """Every node worth asking for the map: the current masters, their replicas, then every
        node seen before (a shard without a master is not in the map, but its replica may be the
        next master) and the URL's seeds."""
        known: list[Address] = []
        if self.slot_map is not None:
            known += self.slot_map.masters
            known += [r for s in self.slot_map.shards for r in s.replicas]
        known += list(self._known)
        return list(dict.fromkeys(known))

    async def _load_map(self) -> SlotMap:
        """Ask the current masters together, then (if some slots have no master that claims them)
        every other node we know; merge what they say (`slots.merge_views`: a node is believed
        about its own slots, so a node that has not yet heard of a change by gossip does not
        turn the map back)."""
        views: dict[Address, SlotMap] = {}
        failures: list[str] = []
        masters = list(self.slot_map.masters) if self.slot_map is not None else []
        others = [a for a in self._candidates() if a not in masters]
        for nodes in (masters, others):
            if nodes:
                await self._ask_maps(nodes, views, failures)
            if views and claimed_slots(views) == SLOTS:
                break
        merged = merge_views(views)
        if merged.ranges:
            return merged  # possibly partial: a failover under way (its slots have no master yet)
        raise RedisConnectionError("no Redis Cluster node answered CLUSTER SHARDS: " + "; ".join(failures[:5]))

    async def _ask_maps(self, nodes: list[Address], views: dict[Address, SlotMap], failures: list[str]) -> None:
        """Ask `nodes` at once; done when all answered, every slot's owner has spoken, or
        `MAP_QUERY_TIMEOUT_S` passed (a node that does not answer does not hold the reload up)."""
        done = trio.Event()
        left = len(nodes)

        async def ask(address: Address) -> None:
            nonlocal left
            try:
                views[address] = await self._ask_map(address)
            except (RedisConnectionError, RedisError, ValueError) as exc:
                failures.append(f"{address[0]}:{address[1]}: {exc}")
            finally:
                left -= 1
                if left == 0 or claimed_slots(views) == SLOTS:
                    done.set()

        with trio.move_on_after(MAP_QUERY_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for address in nodes:
                    nursery.start_soon(ask, address)
                await done.wait()
                nursery.cancel_scope.cancel()

    async def _ask_map(self, address: Address) -> SlotMap:
        client = self.node(address)
        try:
            reply = await client.execute("CLUSTER", "SHARDS", timeout=MAP_QUERY_TIMEOUT_S)
            return parse_cluster_shards(reply, default_host=address[0], tls=self.url.ssl)
        except RedisError as exc:
            if "unknown subcommand" not in str(exc).lower():
                raise
        reply = await client.execute("CLUSTER", "SLOTS", timeout=MAP_QUERY_TIMEOUT_S)  # Redis < 7
        return parse_cluster_slots(reply, default_host=address[0])

    async def _ensure_map(self) -> SlotMap:
        if self.slot_map is None:
            return await self.refresh(force=True)
        return self.slot_map

    # ---- commands -------------------------------------------------------------------------
    async def execute(self, *args: Any, timeout: float | None = None) -> Any:
        """One command; an error reply raises RedisError, an unreachable cluster RedisConnectionError."""
        (reply,) = await self.pipeline([args], timeout=timeout)
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def publish(self, channel: str, message: bytes | str) -> int:
        """Classic PUBLISH (the cluster bus carries it to every node): any master will do."""
        return int(await self.execute("PUBLISH", channel, message))

    async def spublish(self, channel: str, message: bytes | str) -> int:
        """SPUBLISH on the shard that owns the channel's slot."""
        return int(await self.execute("SPUBLISH", channel, message))

    async def pipeline(self, commands: Sequence[Sequence[Any]], *, timeout: float | None = None) -> list[Any]:
        """Many commands, split by node and sent concurrently; replies in call order, error replies
        in place (a CROSSSLOT command's reply is a RedisError made here)."""
        if not commands:
            return []
        limit = self.command_timeout if timeout is None else timeout
        # Each node's exchange ends a little before the whole pipeline's deadline: a node that does
        # not answer (stalled, partitioned) then costs only its own commands, their replies a
        # RedisTimeoutError in place, and the other nodes' replies are kept (PartialPipelineError).
        node_deadline = trio.current_time() + limit * NODE_DEADLINE_SHARE
        with trio.move_on_after(limit):
            return await self._pipeline(commands, node_deadline)
        raise RedisTimeoutError(f"no reply from the Redis Cluster within {limit}s ({command_name(commands[0])})")

    async def _pipeline(self, commands: Sequence[Sequence[Any]], node_deadline: float = math.inf) -> list[Any]:
        await self._ensure_map()
        replies: list[Any] = [None] * len(commands)
        pending: list[_Unit] = []
        for unit in _units(commands):
            if command_name(unit.commands[0]) in BROADCAST:
                replies[unit.start] = await self._broadcast(unit.commands[0])
                continue
            try:
                unit.slot = _unit_slot(unit.commands)
            except (RedisError, UnknownCommand) as exc:
                error = exc if isinstance(exc, RedisError) else RedisError(str(exc))
                for i in range(len(unit.commands)):
                    replies[unit.start + i] = error
                continue
            pending.append(unit)
        backoff = Backoff(RETRY_BACKOFF_MAX_S)
        while pending:
            retry = await self._send_round(pending, node_deadline)
            again = {id(u) for u in retry}
            for unit in pending:
                if id(unit) not in again:
                    replies[unit.start:unit.start + len(unit.replies)] = unit.replies
            if retry:
                self.retries += 1
                await backoff.sleep()
            pending = retry
        lost = [r for r in replies if isinstance(r, RedisConnectionError)]
        if len(lost) == len(replies):  # nothing came back: the error itself (a timeout stays one)
            raise lost[0]
        if lost:  # some node was lost mid-exchange or did not answer: the others' replies are kept
            raise PartialPipelineError(str(lost[0]), replies)
        return replies

    async def _send_round(self, units: list[_Unit], node_deadline: float = math.inf) -> list[_Unit]:
        """Send every unit to its node; returns the units to send again (redirected, or the node
        could not be reached / the cluster could not serve them yet)."""
        groups: dict[Address, list[_Unit]] = {}
        retry: list[_Unit] = []
        cluster_map = await self._ensure_map()
        masters = cluster_map.masters
        unreachable = False  # a node could not be reached, or answered "not now": reload the map
        for unit in units:
            target = unit.ask or (cluster_map.owner(unit.slot) if unit.slot is not None
                                  else (random.choice(masters) if masters else None))
            if target is None:  # the slot has no master in our map: a failover is under way
                retry.append(unit)
                unreachable = True
                continue
            groups.setdefault(target, []).append(unit)

        async def send(address: Address, group: list[_Unit]) -> None:
            nonlocal unreachable
            flat: list[Sequence[Any]] = []
            for unit in group:
                if unit.ask is not None:
                    flat.append(("ASKING",))
                flat.extend(unit.commands)
            try:
                got = await self.node(address).pipeline(flat, timeout=max(0.0, node_deadline - trio.current_time()))
            except RedisConnectFailed:  # nothing was sent: try again once the map is fresh
                unreachable = True
                retry.extend(group)
                return
            except (RedisConnectionError, RedisError) as exc:  # lost mid-exchange (may have run, not sent
                # again), or the connection's AUTH refused: its reply, in place; the other nodes' stand
                unreachable = unreachable or isinstance(exc, RedisConnectionError)
                for unit in group:
                    unit.ask = None
                    unit.replies = [exc] * len(unit.commands)
                return
            i = 0
            for unit in group:
                if unit.ask is not None:
                    i += 1  # ASKING's +OK
                    unit.ask = None
                unit.replies = got[i:i + len(unit.commands)]
                i += len(unit.commands)

        async with trio.open_nursery() as nursery:
            for address, group in groups.items():
                nursery.start_soon(send, address, group)
        redirected = False
        waiting = {id(u) for u in retry}
        for unit in units:
            if id(unit) in waiting or not unit.replies:
                continue
            redirect, busy = _redirect_of(unit.replies)
            if redirect is not None:
                unit.redirects += 1
                if unit.redirects > MAX_REDIRECTS:
                    continue  # the redirect error stays the reply
                if redirect.kind == "MOVED":
                    self.moved += 1
                    self.note_moved(redirect.slot, redirect.address)
                    redirected = True
                else:
                    self.asked += 1
                    unit.ask = redirect.address
                retry.append(unit)
            elif busy:
                retry.append(unit)
                unreachable = True
        if retry and (unreachable or redirected):  # a map for the units sent again; with none to
            # send again (a node lost or silent mid-exchange: its replies are errors in place), the
            # next call that cannot reach it reloads the map, not this one past its deadline
            await self._refresh_quietly(force=unreachable)
        return retry

    async def _refresh_quietly(self, *, force: bool) -> None:
        try:
            await self.refresh(force=force)
        except RedisConnectionError as exc:
            log.warning("Redis Cluster map not refreshed: %s", exc)

    async def _broadcast(self, command: Sequence[Any]) -> Any:
        """A command for every master: KEYS concatenated, DBSIZE summed, else the first reply
        (an error reply of any master wins, so a failed SCRIPT LOAD is never hidden)."""
        cluster_map = await self._ensure_map()
        results: dict[Address, Any] = {}

        async def one(address: Address) -> None:
            try:
                (results[address],) = await self.node(address).pipeline([command], timeout=math.inf)
            except RedisConnectionError as exc:  # raised below, as itself (not in a nursery's group)
                results[address] = exc

        async with trio.open_nursery() as nursery:
            for address in cluster_map.masters:
                nursery.start_soon(one, address)
        replies = [results[a] for a in cluster_map.masters]
        for r in replies:
            if isinstance(r, RedisConnectionError):
                raise r
        errors = [r for r in replies if isinstance(r, RedisError)]
        if errors:
            return errors[0]
        name = command_name(command)
        if name == "KEYS":
            return [k for r in replies for k in r]
        if name == "DBSIZE":
            return sum(int(r) for r in replies)
        return replies[0] if replies else None

    def statistics(self) -> dict:
        return {"map_version": self.map_version, "refreshes": self.refreshes, "moved": self.moved,
                "asked": self.asked, "retries": self.retries,
                "masters": len(self.slot_map.masters) if self.slot_map else 0}

    async def aclose(self) -> None:
        nodes, self._nodes = self._nodes, {}
        for client in nodes.values():
            await client.aclose()


def _units(commands: Sequence[Sequence[Any]]) -> list[_Unit]:
    """Split a pipeline into units: a MULTI … EXEC/DISCARD block stays whole."""
    units: list[_Unit] = []
    i = 0
    while i < len(commands):
        if command_name(commands[i]) == "MULTI":
            j = i + 1
            while j < len(commands) and command_name(commands[j]) not in ("EXEC", "DISCARD"):
                j += 1
            end = min(j + 1, len(commands))
        else:
            end = i + 1
        units.append(_Unit(i, list(commands[i:end])))
        i = end
    return units


def _unit_slot(commands: Sequence[Sequence[Any]]) -> int | None:
    slots: set[int] = set()
    for c in commands:
        slots.update(key_slot(k) for k in command_keys(c))
    if len(slots) > 1:
        names = ", ".join(dict.fromkeys(command_name(c) for c in commands))
        raise RedisError(f"CROSSSLOT {names}: its keys hash to slots {sorted(slots)[:4]}…; under Redis Cluster "
                         "the keys of one command, script or transaction must share a {hash tag}")
    return slots.pop() if slots else None


def _redirect_of(replies: Sequence[Any]) -> tuple[Redirect | None, bool]:
    """(the MOVED/ASK among a unit's replies, whether a reply says "not run, try again")."""
    busy = False
    for r in replies:
        if isinstance(r, RedisError):
            redirect = parse_redirect(str(r))
            if redirect is not None:
                return redirect, False
            if str(r).startswith(RETRYABLE):
                busy = True
    return None, busy


__all__ = ["ClusterClient", "MAX_REDIRECTS"]
