"""ScriptBatcher: concurrent calls of one Lua script share round trips.

Each caller still waits for its own reply (and gets its own error), so nothing about a call's
meaning changes; but the calls queued while a batch is in flight go out together, in call order,
as one pipeline. Under load (many sessions producing at once) a process then pays one round
trip per batch instead of one per call; alone, a call costs what it did.
"""

from __future__ import annotations

from typing import Any, Sequence

import trio

from kdc_trio.redis.commands import Commands, Script

# Calls sent in one pipeline at most: bounds one write and one reply read.
MAX_BATCH = 512


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
            for _, _, slot in self._queue:  # callers left waiting get an error, not silence
                slot.error = RuntimeError("the Redis publisher stopped")
                slot.done.set()
            self._queue = []

    async def _send(self, batch: list[tuple[Sequence[Any], Sequence[Any], _Slot]]) -> None:
        sha = self.script.sha
        try:
            replies = await self.redis.pipeline([("EVALSHA", sha, len(k), *k, *a) for k, a, _ in batch])
            if any(isinstance(r, Exception) and "NOSCRIPT" in str(r) for r in replies):
                await self.redis.execute("SCRIPT", "LOAD", self.script.source)
                redo = [i for i, r in enumerate(replies) if isinstance(r, Exception) and "NOSCRIPT" in str(r)]
                again = await self.redis.pipeline([("EVALSHA", sha, len(batch[i][0]), *batch[i][0], *batch[i][1])
                                                   for i in redo])
                for i, r in zip(redo, again):
                    replies[i] = r
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


def raise_if_not_exception(exc: BaseException) -> None:
    if not isinstance(exc, Exception):
        raise exc
