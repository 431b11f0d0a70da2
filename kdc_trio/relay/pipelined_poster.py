"""PipelinedPoster: one producer's events through Redis without a round trip per event.

`post` encodes the event and queues it for the PUBLISH script (relay/redis_bus.py) and returns
at once; the bus's ScriptBatcher sends every waiting call in one pipeline while the previous
batch's replies come back. Consecutive events of one session from one poster ride in one script
call (up to MAX_EVENTS_PER_CALL), which takes their seqs in posting order; a call's events share
one head (event name, target, timestamp: passed once), so a change of name or target starts the
next call.

What `post` promises (the README's "Publishing through Redis"):
- order: a poster's events of one session are published in posting order, with increasing
  seqs assigned by Redis (one connection, one pipeline at a time, calls in submit order; under
  Redis Cluster a session's calls all go to its slot's master, in order);
- the seq: `post` returns None; the event's `data["seq"]` is set once Redis assigned it, and
  `flush()` waits for that;
- failure is never silent: once a call failed, the poster's next `post` and its `flush` raise
  that error (the original Redis error, so the runner tells Redis unavailability apart), and
  its calls not yet sent are not sent. Events posted after the failed one and already sent may
  have been published (each call is atomic in Redis; a failure is about a whole call). The
  runner flushes at the end of every bundle run, so a turn never ends as a success with an
  event lost;
- bounded: at most `window` events are unconfirmed; `post` waits (backpressure) past that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from kdc_trio.redis.batching import Call
from kdc_trio.relay.bus import Poster, YieldBudget
from kdc_trio.relay.keys import SessionKey

if TYPE_CHECKING:
    from kdc_trio.relay.redis_bus import RedisBus


class _Events:
    """The events of one script call, to hand each its seq when the call's reply comes. They
    share one head (the PUBLISH script's): their event name and target (`kind`)."""

    __slots__ = ("poster", "key", "kind", "datas", "call")

    def __init__(self, poster: "PipelinedPoster", key: SessionKey, kind: tuple[str, str | None]) -> None:
        self.poster = poster
        self.key = key
        self.kind = kind
        self.datas: list[dict] = []
        self.call: Call | None = None

    def __call__(self, value: Any, error: BaseException | None) -> None:
        self.poster._done(self, value, error)


class PipelinedPoster(Poster):
    __slots__ = ("window", "pending", "error", "_error_tb", "_change", "_open", "_yield", "_max_per_call")

    def __init__(self, bus: "RedisBus", window: int, max_per_call: int) -> None:
        super().__init__(bus)
        self.window = max(1, window)
        self._max_per_call = max(1, max_per_call)
        self.pending = 0      # posted, not yet answered
        self.error: BaseException | None = None
        self._error_tb: Any = None  # the error's traceback as it failed (see _raise)
        self._change: trio.Event | None = None
        self._open: dict[SessionKey, _Events] = {}  # per session: this poster's call still unsent
        self._yield = YieldBudget()

    async def post(self, key: SessionKey, *, event: str, data: dict, target_sid: str | None = None) -> int | None:
        if self.error is not None:
            self._raise(self.error)
        bus: RedisBus = self.bus  # type: ignore[assignment]
        if not bus.publisher.running:  # not started, or stopping: publish and wait, as Poster does
            await self._drain()
            return await super().post(key, event=event, data=data, target_sid=target_sid)
        while self.pending >= self.window:
            await self._wait()
            if self.error is not None:
                self._raise(self.error)
        body = bus.encode_body(data)
        events = self._open.get(key)
        call = None if events is None else events.call
        if (call is None or call.sent or len(events.datas) >= self._max_per_call  # type: ignore[union-attr]
                or events.kind[0] != event or events.kind[1] != target_sid):  # type: ignore[union-attr]
            # a new call: its head (see PUBLISH) is this event's name, target and time
            events = _Events(self, key, (event, target_sid))
            events.call = bus.publisher.submit(
                bus.script_keys(key), [*bus.script_fixed_args(key), bus.event_head(key, event, target_sid), body],
                events, check=self._refusal)
            self._open[key] = events
        else:
            call.args.append(body)
        events.datas.append(data)
        self.pending += 1
        if self._yield.due():  # YieldBudget.spend, without a coroutine per event
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        return None

    async def flush(self) -> None:
        await self._drain()
        await trio.lowlevel.checkpoint()
        error, self.error = self.error, None  # told once: a poster that raised can be used again
        if error is not None:
            tb, self._error_tb = self._error_tb, None  # not kept (its frames' locals) once told
            raise error.with_traceback(tb)

    def _raise(self, error: BaseException) -> None:
        """Raise the stored error (the same object each time, as the contract says) with its
        traceback as it failed: raised as it is, every raise would add its frames to the one
        before's, and a producer that catches and posts on would grow it without bound."""
        raise error.with_traceback(self._error_tb)

    async def _drain(self) -> None:
        while self.pending:
            await self._wait()

    def _refusal(self) -> BaseException | None:
        return self.error

    async def _wait(self) -> None:
        if self._change is None:
            self._change = trio.Event()
        await self._change.wait()

    def _done(self, events: _Events, value: Any, error: BaseException | None) -> None:
        # The call and its events point at each other (Call.done is `events`): break the cycle
        # here, so they and the events' envelopes are freed by reference counting now. Left to
        # the cyclic collector, every envelope of a turn survived into the older generations,
        # whose collections then walked them all (~25 % of a worker's CPU in a stream).
        events.call = None
        n = len(events.datas)
        self.pending -= n
        if self._open.get(events.key) is events:
            del self._open[events.key]
        if error is None:
            last = int(value)
            for i, data in enumerate(events.datas, start=last - n + 1):
                data["seq"] = i
            self.confirmed += n
            self.bus.published += n  # type: ignore[attr-defined]
        elif self.error is None:
            self.error = error
            self._error_tb = error.__traceback__
        if self._change is not None:
            self._change.set()
            self._change = None
