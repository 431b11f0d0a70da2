"""ScriptBatcher: concurrent calls of one Lua script share round trips.

Each caller still waits for its own reply (and gets its own error), so nothing about a call's
meaning changes; but the calls queued while a batch is in flight go out together, in call order,
as one pipeline. Under load (many sessions producing at once) a process then pays one round
trip per batch instead of one per call; alone, a call costs what it did.

Shutdown: a batch already sent is finished even when the batcher is cancelled (shielded,
bounded by the client's command deadline and `FINISH_TIMEOUT_S`): its commands may have run,
so dropping its replies would turn a published event into an error. Calls still queued when
the batcher stops are made by their callers as plain calls (a shielded finalizer that
publishes during shutdown still publishes).
"""

from __future__ import annotations

from typing import Any, Sequence

import trio

from kdc_trio.redis.commands import Commands, Script
from kdc_trio.redis.connection import PartialPipelineError

# Calls sent in one pipeline at most: bounds one write and one reply read.
MAX_BATCH = 512
# A sent batch is finished despite cancellation for at most this long (the client's own
# command deadline normally ends it first).
FINISH_TIMEOUT_S = 30.0
# A queued call's slot holds this when the batcher stopped before sending it.
_UNSENT = object()


class _Slot:
    __slots__ = ("done", "value", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class ScriptBatcher:
    def __init__(self, redis: Commands, script: Script) -> None:
        self.redis = redis
        self.script = script
        self._queue: list[tuple[Sequence[Any], Sequence[Any], _Slot]] = []
        self._wake = trio.Event()
        self.running = False
        self.batches = 0
        self.calls = 0

    async def call(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if not self.running:  # not started (or stopped): a plain call
            return await self.script.run(self.redis, keys=keys, args=args)
        slot = _Slot()
        self._queue.append((keys, args, slot))
        self._wake.set()
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        if slot.value is _UNSENT:
            return await self.script.run(self.redis, keys=keys, args=args)
        return slot.value

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        try:
            while True:
                while not self._queue:
                    self._wake = trio.Event()
                    await self._wake.wait()
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._send(batch)
        finally:
            self.running = False
            for _, _, slot in self._queue:  # never sent: their callers make the calls themselves
                slot.value = _UNSENT
                slot.done.set()
            self._queue = []

    async def _send(self, batch: list[tuple[Sequence[Any], Sequence[Any], _Slot]]) -> None:
        sha = self.script.sha
        try:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + FINISH_TIMEOUT_S) as scope:
                replies = await self._round_trip(sha, batch)
            if scope.cancelled_caught:
                raise trio.TooSlowError(f"a publish batch took over {FINISH_TIMEOUT_S}s")
        except BaseException as exc:
            for _, _, slot in batch:
                slot.error = exc if isinstance(exc, Exception) else RuntimeError("publish interrupted")
                slot.done.set()
            raise_if_not_exception(exc)
            return
        self.batches += 1
        self.calls += len(batch)
        for (_, _, slot), reply in zip(batch, replies):
            if isinstance(reply, Exception):
                slot.error = reply
            else:
                slot.value = reply
            slot.done.set()

    async def _round_trip(self, sha: str, batch: list[tuple[Sequence[Any], Sequence[Any], _Slot]]) -> list[Any]:
        replies = await _pipeline(self.redis, [("EVALSHA", sha, len(k), *k, *a) for k, a, _ in batch])
        redo = [i for i, r in enumerate(replies) if isinstance(r, Exception) and "NOSCRIPT" in str(r)]
        if redo:  # the server lost the script (restart, SCRIPT FLUSH): redo those calls with EVAL,
            # which also loads it — on each node that needs it (a Redis Cluster routes each call
            # to its slot's node; a SCRIPT LOAD would reach one node only)
            source = self.script.source
            again = await _pipeline(self.redis, [("EVAL", source, len(batch[i][0]), *batch[i][0], *batch[i][1])
                                                 for i in redo])
            for i, r in zip(redo, again):
                replies[i] = r
        return replies


def raise_if_not_exception(exc: BaseException) -> None:
    if not isinstance(exc, Exception):
        raise exc


async def _pipeline(redis: Commands, commands: list[tuple]) -> list[Any]:
    """The replies, in place; a Redis Cluster node lost mid-exchange fails only its own calls
    (the other nodes' calls ran: their callers get their values, not an error)."""
    try:
        return await redis.pipeline(commands)
    except PartialPipelineError as exc:
        return exc.replies
