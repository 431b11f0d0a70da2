"""ScriptBatcher: concurrent calls of one Lua script share round trips.

Each caller still waits for its own reply (and gets its own error), so nothing about a call's
meaning changes; but the calls queued while a batch is in flight go out together, in call order,
as one pipeline. Under load (many sessions producing at once) a process then pays one round
trip per batch instead of one per call; alone, a call costs what it did.

Two ways in: `call` waits for its own reply; `submit` queues a call and returns at once, its
reply going to a callback (the relay's pipelined publisher: one producer keeps many calls in
flight, RedisBus.poster).

Shutdown: a batch already sent is finished even when the batcher is cancelled (shielded,
bounded by the client's command deadline and `FINISH_TIMEOUT_S`): its commands may have run,
so dropping its replies would turn a published event into an error. Calls still queued when
the batcher stops get `BatcherStopped` (they did not run): a waiting `call` then makes its call
itself as a plain call (a shielded finalizer that publishes during shutdown still publishes).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import trio

from kdc_trio.redis.commands import Commands, Script
from kdc_trio.redis.connection import PartialPipelineError

# Calls sent in one pipeline at most: bounds one write and one reply read.
MAX_BATCH = 512
# A sent batch is finished despite cancellation for at most this long (the client's own
# command deadline normally ends it first).
FINISH_TIMEOUT_S = 30.0


class BatcherStopped(Exception):
    """The batcher stopped before this call was sent: it did not run."""


# done(value, error): exactly one of them is meaningful; called once, from the batcher's task
# (or from `submit`'s caller's stack when the batcher is not running).
Done = Callable[[Any, "BaseException | None"], None]


class Call:
    """One queued script call. Until it is sent (`sent` False) its owner may still append to
    `args` (the relay's publisher adds events of the same session to a waiting call)."""

    __slots__ = ("keys", "args", "done", "check", "sent")

    def __init__(self, keys: Sequence[Any], args: list[Any], done: Done,
                 check: Callable[[], BaseException | None] | None) -> None:
        self.keys = keys
        self.args = args
        self.done = done
        self.check = check  # at send time: an error means "do not send; fail the call with it"
        self.sent = False


class _Slot:
    __slots__ = ("done", "value", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any, error: BaseException | None) -> None:
        self.value, self.error = value, error
        self.done.set()


class ScriptBatcher:
    def __init__(self, redis: Commands, script: Script) -> None:
        self.redis = redis
        self.script = script
        self._queue: list[Call] = []
        self._wake = trio.Event()
        self.running = False
        self.batches = 0
        self.calls = 0

    def submit(self, keys: Sequence[Any], args: list[Any], done: Done, *,
               check: Callable[[], BaseException | None] | None = None) -> Call:
        """Queue a call without waiting for it (the batcher must be running); `done` gets its
        reply or its error. Calls go out in submit order."""
        if not self.running:
            raise BatcherStopped("the batcher is not running")
        call = Call(keys, args, done, check)
        self._queue.append(call)
        self._wake.set()
        return call

    async def call(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if not self.running:  # not started (or stopped): a plain call
            return await self.script.run(self.redis, keys=keys, args=args)
        slot = _Slot()
        self.submit(keys, list(args), slot.set)
        await slot.done.wait()
        if isinstance(slot.error, BatcherStopped):
            return await self.script.run(self.redis, keys=keys, args=args)
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
            # Never sent: their owners learn it (a waiting `call` then makes the call itself).
            queued, self._queue = self._queue, []
            for call in queued:
                call.sent = True
                call.done(None, BatcherStopped("the batcher stopped before this call was sent"))

    async def _send(self, batch: list[Call]) -> None:
        for call in batch:
            call.sent = True
        wanted = []
        for call in batch:
            refused = call.check() if call.check is not None else None
            if refused is None:
                wanted.append(call)
            else:
                call.done(None, refused)
        if not wanted:
            return
        sha = self.script.sha
        try:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + FINISH_TIMEOUT_S) as scope:
                replies = await self._round_trip(sha, wanted)
            if scope.cancelled_caught:
                raise trio.TooSlowError(f"a publish batch took over {FINISH_TIMEOUT_S}s")
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else RuntimeError("publish interrupted")
            for call in wanted:
                call.done(None, error)
            raise_if_not_exception(exc)
            return
        self.batches += 1
        self.calls += len(wanted)
        for call, reply in zip(wanted, replies):
            if isinstance(reply, Exception):
                call.done(None, reply)
            else:
                call.done(reply, None)

    async def _round_trip(self, sha: str, batch: list[Call]) -> list[Any]:
        replies = await _pipeline(self.redis, [("EVALSHA", sha, len(c.keys), *c.keys, *c.args) for c in batch])
        redo = [i for i, r in enumerate(replies) if isinstance(r, Exception) and "NOSCRIPT" in str(r)]
        if redo:  # the server lost the script (restart, SCRIPT FLUSH): redo those calls with EVAL,
            # which also loads it — on each node that needs it (a Redis Cluster routes each call
            # to its slot's node; a SCRIPT LOAD would reach one node only)
            source = self.script.source
            again = await _pipeline(self.redis, [("EVAL", source, len(batch[i].keys), *batch[i].keys,
                                                  *batch[i].args) for i in redo])
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
