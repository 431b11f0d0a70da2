"""One Engine.IO session's state: its bounded queue of outgoing frames, its close, and its
heartbeat (ping every pingInterval, close without a pong within pingTimeout) as an alarm on the
process timer (util/timers.py). Its life is owned by `EIOServer` (transports/eio_server.py): the
task of the WebSocket connection that opened it, or a polling session's task.

Overflow policy: the queue is bounded (`max_queue`); a socket whose queue is full is closed
with a logged reason, never blocks its producers.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Awaitable

import trio

from kdc_trio.server import ClientGone, Request
from kdc_trio.server.websocket import WebSocket, WebSocketClosed
from kdc_trio.transports.eio_types import client_host
from kdc_trio.util.batch_queue import BatchQueue
from kdc_trio.util.timers import Alarm, Timers
from protocol.eio_state import EIOEvent, initial_state, transition

if TYPE_CHECKING:
    from kdc_trio.transports.eio_server import EIOServer


class EIOSocket:
    __slots__ = ("server", "sid", "request", "transport", "state", "app_state", "close_reason", "_closed", "_out",
                 "opened_at", "upgrade_settled", "used", "address", "_poll_pending", "_noop_pending_poll",
                 "_send_close_packet", "poll_after_close", "ws", "ws_close_code", "_alarm", "_ping_at", "_pong_by",
                 "_ended")

    def __init__(self, server: "EIOServer", request: Request, transport: str) -> None:
        self.server = server
        self.sid = secrets.token_urlsafe(15)
        self.request = request  # the handshake request: headers and cookies for auth
        self.transport = transport
        self.state = initial_state(transport)
        self.app_state: object = None
        self.close_reason: str | None = None
        self._closed: trio.Event | None = None  # made by wait_closed (a polling session's task)
        self._out: BatchQueue[str | bytes] = BatchQueue(server.max_queue)
        self.opened_at = trio.current_time()
        self.upgrade_settled: trio.Event | None = None  # made by an upgrade; set when its probe ends
        self.used = transport == "websocket"  # polled, posted to or upgraded since the handshake
        self.address = client_host(request.client)
        self._poll_pending = False
        self._noop_pending_poll = False
        self._send_close_packet = False
        self.poll_after_close: trio.Event | None = None  # see close(await_poll=True)
        self.ws: WebSocket | None = None
        self.ws_close_code = 1000
        self._alarm: Alarm | None = None  # the heartbeat's (start_heartbeat)
        self._ping_at = self.opened_at  # when the next ping is due
        self._pong_by: float | None = None  # a ping is out: the pong is due by then
        self._ended = False  # the app was told (on_close)

    # ---- sending -------------------------------------------------------------------------
    def send(self, frame: str | bytes) -> None:
        """Queue one Engine.IO frame (WebSocket encoding: `4…` text, raw bytes binary)."""
        self.send_many((frame,))

    def send_many(self, frames) -> None:
        if self.close_reason is not None:
            return
        if not self._out.extend_nowait(frames):
            self.close(f"outbox_full: more than {self.server.max_queue} frames waiting (SSE_CLIENT_QUEUE)")

    def take(self) -> list[str | bytes]:
        return self._out.take_nowait()

    async def flush(self) -> None:
        """Write what is queued now, on a WebSocket (a reply that must not share a TCP read
        with what follows it); polling sockets wait for their next poll."""
        ws = self.ws
        if ws is not None and self.transport == "websocket":
            frames = self.take()
            if frames:
                try:
                    await ws.send_many(frames)
                except (ClientGone, WebSocketClosed) as exc:
                    self.close(f"write failed: {exc}")

    def wait_output(self) -> Awaitable[None]:
        """Until frames are queued, the socket closes, or its transport state changes (`wake`);
        the queue's own coroutine (an idle writer's stack holds one frame less)."""
        return self._out.wait_nonempty()

    async def wait_taken(self) -> None:
        """Until the queued frames are taken by a transport (a WebSocket send, a poll), the
        socket closes, or `wake` is called."""
        await self._out.wait_empty()

    async def wait_closed(self) -> None:
        if self.close_reason is None:
            if self._closed is None:
                self._closed = trio.Event()
            await self._closed.wait()

    def wake(self) -> None:
        self._out.wake()

    def writable_now(self) -> WebSocket | None:
        """The WebSocket a write-through may write to now (server/wire.py): upgraded, nothing
        queued here, its writer idle; else None (queue as usual)."""
        ws = self.ws
        if ws is None or self.transport != "websocket" or self._out or self.close_reason is not None \
                or not ws.can_write_now():
            return None
        return ws

    def close(self, reason: str, *, send_close_packet: bool = True, await_poll: bool = False) -> None:
        """End the socket (idempotent): its session task ends, its transports are told.
        `await_poll`: the sid stays known until one more poll is answered (or CLOSE_POLL_GRACE_S)."""
        if self.close_reason is None:
            self.close_reason = reason
            self._send_close_packet = send_close_packet
            self.state = transition(self.state, EIOEvent.CLOSE)
            if self._closed is not None:
                self._closed.set()
            if self._alarm is not None:
                Timers.cancel_alarm(self._alarm)
            self._out.close()
            # Gone for every later request at once (a poll already waiting still gets its
            # answer), not when the session task gets to its teardown.
            if not await_poll:
                self.server._forget(self)
            else:
                self.poll_after_close = trio.Event()

    # ---- heartbeat (an alarm on the process timer) ------------------------------------------
    def start_heartbeat(self) -> None:
        """Ping every pingInterval, counted from the handshake (so the close lands at
        pingInterval + pingTimeout after the open packet, as clients expect); a pong not back
        within pingTimeout closes the socket."""
        self._alarm = Alarm(self._heartbeat)
        self._ping_at = self.opened_at + self.server.ping_interval_ms / 1000
        Timers.shared().set_alarm(self._alarm, self._ping_at)

    def _heartbeat(self) -> None:
        if self.close_reason is not None or self._alarm is None:
            return
        now = trio.current_time()
        if self._pong_by is None:
            if now < self._ping_at:  # the grid woke it early
                Timers.shared().set_alarm(self._alarm, self._ping_at)
                return
            self._pong_by = self._ping_at + self.server.ping_timeout_ms / 1000
            self.send("2")
            Timers.shared().set_alarm(self._alarm, self._pong_by)
        elif now < self._pong_by:
            Timers.shared().set_alarm(self._alarm, self._pong_by)
        else:
            self.close("ping timeout", send_close_packet=False)

    def pong(self) -> None:
        if self._pong_by is not None and self._alarm is not None and self.close_reason is None:
            self._pong_by = None
            self._ping_at = trio.current_time() + self.server.ping_interval_ms / 1000
            Timers.shared().set_alarm(self._alarm, self._ping_at)
