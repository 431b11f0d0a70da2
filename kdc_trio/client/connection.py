"""`Client`: one SSE stream to a gateway, the turns sent on it, and resuming when it drops.

Async on anyio (through httpx), so it runs under trio and under asyncio alike. No background
task: whoever iterates a turn reads the stream, one event at a time under a lock, and hands
each event to the turn it belongs to; a turn being read by another task finds its events
waiting in its own buffer. A dropped stream (EOF, reset, a read silent past `read_timeout_s`)
is re-opened with `Last-Event-ID`; the server replays what the log holds after it, and events
at or below the last sequence seen are dropped, so nothing is lost or repeated.
"""

from __future__ import annotations

import json
import mimetypes
import os
import secrets
from collections import deque
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Union

import anyio
import httpx
from httpx_sse import SSEError, aconnect_sse

from kdc_trio.client.events import Answer, Complete, Error, Gap, TurnEvent, decode

# Re-opening a dropped stream: the first try is immediate, then waits double from this, up to
# the server's `retry:` hint (KDC_SSE_RETRY_MS): a restarting gateway is not hammered.
RECONNECT_FIRST_WAIT_S = 0.05
# Tries before giving up with ConnectionLost: with doubling waits capped at 3 s that is ~15 s.
RECONNECT_ATTEMPTS = 8
# A stream that sends nothing (not even a heartbeat, KDC_SSE_HEARTBEAT_S = 15 s by default) for
# this long is taken as dead and re-opened.
READ_TIMEOUT_S = 45.0
# Connecting and posting: a gateway that does not answer in this long is unreachable.
CONNECT_TIMEOUT_S = 10.0
POST_TIMEOUT_S = 60.0

FileSpec = Union[str, os.PathLike, tuple[str, bytes], tuple[str, bytes, str]]


class ClientError(Exception):
    """Base of the client's errors."""


class Refused(ClientError):
    """The gateway answered a request with an error status and its JSON `{error, detail}`."""

    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(f"{status} {error}: {detail}" if detail else f"{status} {error}")
        self.status = status
        self.error = error
        self.detail = detail


class ConnectionLost(ClientError):
    """The gateway could not be reached, or a dropped stream could not be re-opened."""


class EventsLost(ClientError):
    """A resume found the gateway's log had moved on: some of the turn's events are gone
    (`gap` says which sequences); `answer` holds what arrived."""

    def __init__(self, gap: Gap, answer: Answer) -> None:
        super().__init__(f"events {gap.after_seq + 1}..{gap.first_seq - 1} were lost ({gap.reason})")
        self.gap = gap
        self.answer = answer


class ProtocolError(ClientError):
    """The gateway sent an event this client cannot decode."""


class TurnFailed(ClientError):
    """The turn ended in `chat_error`; `answer` holds what had arrived before it."""

    def __init__(self, error: Error, answer: Answer) -> None:
        super().__init__(error.error)
        self.event = error
        self.answer = answer


@dataclass(frozen=True, kw_only=True)
class SessionInfo:
    """The `ready` event: the session this client's stream is bound to."""

    session_id: str
    user_type: str
    stream_id: str
    tenant: str | None
    project: str | None
    user_id: str | None


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def _file_part(spec: FileSpec) -> tuple[str, bytes, str]:
    if isinstance(spec, tuple):
        name, data = spec[0], spec[1]
        mime = spec[2] if len(spec) > 2 else None  # type: ignore[misc]
    else:
        path = Path(spec)
        name, data, mime = path.name, path.read_bytes(), None
    return name, bytes(data), mime or mimetypes.guess_type(name)[0] or "application/octet-stream"


async def _refusal(resp: httpx.Response) -> Refused:
    try:
        body = json.loads(await resp.aread())
    except ValueError:
        body = None
    if isinstance(body, dict):
        return Refused(resp.status_code, str(body.get("error") or "error"), str(body.get("detail") or ""))
    return Refused(resp.status_code, "http_error", resp.reason_phrase)


class Turn:
    """One turn's events, in order, as they arrive: `async for event in turn`, or `await
    turn.answer()`. Iteration ends after `Complete` or `Error` (or `Gap`: events were lost)."""

    def __init__(self, client: "Client", turn_id: str, conversation_id: str | None) -> None:
        self._client = client
        self.turn_id = turn_id
        self.conversation_id = conversation_id
        self.accepted: dict[str, Any] = {}  # the 202 body: task_id, session_id, conversation_id, …
        self.events: list[TurnEvent] = []  # what iteration has yielded so far
        self._buffer: deque[TurnEvent] = deque()
        self._routed_last = False  # its Complete/Error is in the buffer: nothing more is routed here

    def __aiter__(self) -> "Turn":
        return self

    async def __anext__(self) -> TurnEvent:
        while not self._buffer:
            if self._routed_last:
                raise StopAsyncIteration
            await self._client._read_for(self)
        event = self._buffer.popleft()
        self.events.append(event)
        return event

    async def answer(self) -> Answer:
        """Read the rest of the turn; its assembled answer, or TurnFailed on `chat_error`,
        EventsLost when a resume could not replay all of it."""
        async for _ in self:
            pass
        answer = Answer.of(self.events)
        if answer.error is not None:
            raise TurnFailed(answer.error, answer)
        if answer.gap is not None:
            raise EventsLost(answer.gap, answer)
        return answer


class Client:
    """A connection to one gateway: `async with Client(url, token=…) as client:`."""

    def __init__(self, url: str, *, token: str | None = None, id_token: str | None = None,
                 tenant: str | None = None, project: str | None = None, session_id: str | None = None,
                 stream_id: str | None = None, id_token_header: str = "X-ID-Token",
                 reconnect_attempts: int = RECONNECT_ATTEMPTS, read_timeout_s: float = READ_TIMEOUT_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.stream_id = stream_id or _new_id("py")
        self._headers = {}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        if id_token:
            self._headers[id_token_header] = id_token
        self._params = {k: v for k, v in (("tenant", tenant), ("project", project)) if v}
        self._session_id = session_id
        self.reconnect_attempts = reconnect_attempts
        self._timeout = httpx.Timeout(connect_timeout_s, read=read_timeout_s, write=POST_TIMEOUT_S,
                                      pool=connect_timeout_s)
        self._http: httpx.AsyncClient | None = None
        self._stream: AsyncExitStack | None = None
        self._sse: AsyncIterator[Any] | None = None
        self._lock = anyio.Lock()
        self._turns: dict[str, Turn] = {}
        self._retry_s = 3.0
        self.session: SessionInfo | None = None
        self.last_seq = 0
        self.reconnects = 0
        self.gaps = 0
        self.duplicates = 0
        self.events = 0

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def statistics(self) -> dict[str, int]:
        return {"events": self.events, "last_seq": self.last_seq, "reconnects": self.reconnects, "gaps": self.gaps,
                "duplicates_dropped": self.duplicates, "turns_open": len(self._turns)}

    # ---- the stream ------------------------------------------------------------------------
    async def connect(self) -> SessionInfo:
        """Open the stream and wait for `ready`; raises Refused or ConnectionLost."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        try:
            await self._open()
        except httpx.TransportError as exc:
            raise ConnectionLost(f"cannot reach {self.url}: {exc!r}") from exc
        assert self.session is not None
        return self.session

    async def aclose(self) -> None:
        await self._close_stream()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _close_stream(self) -> None:
        stack, self._stream, self._sse = self._stream, None, None
        if stack is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await stack.aclose()
                except (httpx.TransportError, SSEError):
                    pass  # closing a stream that already broke

    async def _open(self) -> None:
        assert self._http is not None
        params = {"stream_id": self.stream_id, **self._params}
        if self._session_id:
            params["user_session_id"] = self._session_id
        headers = dict(self._headers)
        if self.last_seq:
            headers["Last-Event-ID"] = str(self.last_seq)
        stack = AsyncExitStack()
        try:
            source = await stack.enter_async_context(
                aconnect_sse(self._http, "GET", f"{self.url}/sse/stream", params=params, headers=headers))
            if source.response.status_code != 200:
                raise await _refusal(source.response)
            sse = source.aiter_sse()
            stack.push_async_callback(sse.aclose)  # type: ignore[attr-defined]
            async for first in sse:
                if first.event == "ready":
                    break
            else:
                raise httpx.RemoteProtocolError("the stream ended before `ready`")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        ready = json.loads(first.data)
        if first.retry:
            self._retry_s = first.retry / 1000
        if self._session_id and ready.get("session_id") != self._session_id:
            await stack.aclose()
            raise ConnectionLost(f"resumed on another session ({ready.get('session_id')}, not {self._session_id})")
        self._session_id = ready["session_id"]
        self.session = SessionInfo(session_id=ready["session_id"], user_type=ready.get("user_type", ""),
                                   stream_id=ready.get("stream_id", self.stream_id), tenant=ready.get("tenant"),
                                   project=ready.get("project"), user_id=ready.get("user_id"))
        self._stream, self._sse = stack, sse

    async def _next_sse(self) -> Any:
        """The next event from the stream, re-opening it (with Last-Event-ID) when it drops."""
        while True:
            if self._sse is not None:
                try:
                    return await self._sse.__anext__()
                except StopAsyncIteration:
                    reason = "the stream ended"
                except (httpx.TransportError, SSEError) as exc:
                    reason = repr(exc)
            else:
                reason = "no stream"
            await self._reconnect(reason)

    async def _reconnect(self, reason: str) -> None:
        await self._close_stream()
        wait = 0.0
        last: Exception | None = None
        for _ in range(self.reconnect_attempts):
            await anyio.sleep(wait)
            wait = min(max(wait * 2, RECONNECT_FIRST_WAIT_S), max(self._retry_s, RECONNECT_FIRST_WAIT_S))
            try:
                await self._open()
            except httpx.TransportError as exc:
                last = exc
                continue
            except Refused as exc:
                if exc.status < 500:
                    raise  # e.g. the session is gone (a restarted memory gateway): resuming cannot work
                last = exc
                continue
            self.reconnects += 1
            return
        raise ConnectionLost(f"stream lost ({reason}) and not re-opened after "
                             f"{self.reconnect_attempts} attempts: {last!r}")

    async def _read_for(self, turn: Turn) -> None:
        """Read one event from the stream (unless another reader already got `turn` some)."""
        async with self._lock:
            if turn._buffer or turn._routed_last:
                return
            sse = await self._next_sse()
            if sse.retry:
                self._retry_s = sse.retry / 1000
            try:
                event = decode(sse.event, sse.id or None, sse.data)
            except (ValueError, TypeError) as exc:
                raise ProtocolError(f"undecodable {sse.event!r} event from {self.url}: {exc}") from exc
            self._route(event)

    def _route(self, event: TurnEvent | None) -> None:
        if event is None:
            return
        if isinstance(event, Gap):
            # What the open turns missed cannot be replayed: each ends with the Gap (its end
            # may be among the lost events, so waiting for it could be forever).
            self.gaps += 1
            for turn in list(self._turns.values()):
                turn._buffer.append(event)
                turn._routed_last = True
            self._turns.clear()
            return
        if event.seq is not None:
            if event.seq <= self.last_seq:
                self.duplicates += 1
                return
            self.last_seq = event.seq
        self.events += 1
        turn = self._turns.get(event.turn_id or "")
        if turn is None:
            return  # another turn of the session (another client's, or one nobody waits for)
        turn._buffer.append(event)
        if isinstance(event, (Complete, Error)):
            turn._routed_last = True
            del self._turns[turn.turn_id]

    # ---- turns -----------------------------------------------------------------------------
    async def send(self, text: str, *, files: Iterable[FileSpec] = (), conversation_id: str | None = None,
                   payload: dict[str, Any] | None = None) -> Turn:
        """Post a message (with attachments: paths or (name, bytes[, mime]) tuples); returns the
        Turn to iterate. Raises Refused (the gateway said no) or ConnectionLost."""
        if self._http is None or self.session is None:
            await self.connect()
        assert self._http is not None
        turn_id = _new_id("turn")
        message: dict[str, Any] = {**(payload or {}), "text": text, "turn_id": turn_id}
        if conversation_id:
            message["conversation_id"] = conversation_id
        parts = [_file_part(f) for f in files]
        params = {"stream_id": self.stream_id, "user_session_id": self._session_id, **self._params}
        turn = Turn(self, turn_id, conversation_id)
        self._turns[turn_id] = turn  # before posting: its first events may arrive before the 202
        try:
            if parts:
                meta = [{"filename": name, "mime": mime} for name, _, mime in parts]
                resp = await self._http.post(
                    f"{self.url}/sse/chat", params=params, headers=self._headers,
                    data={"message": json.dumps(message), "attachment_meta": json.dumps(meta)},
                    files=[("files", part) for part in parts])
            else:
                resp = await self._http.post(f"{self.url}/sse/chat", params=params, headers=self._headers,
                                             json={"message": message})
            if resp.status_code != 202:
                raise await _refusal(resp)
        except httpx.TransportError as exc:
            self._turns.pop(turn_id, None)
            raise ConnectionLost(f"cannot post to {self.url}: {exc!r}") from exc
        except BaseException:
            self._turns.pop(turn_id, None)
            raise
        turn.accepted = resp.json()
        turn.conversation_id = turn.accepted.get("conversation_id", conversation_id)
        return turn

    async def ask(self, text: str, *, files: Iterable[FileSpec] = (), conversation_id: str | None = None) -> Answer:
        """Send and wait for the whole answer (TurnFailed on `chat_error`)."""
        turn = await self.send(text, files=files, conversation_id=conversation_id)
        return await turn.answer()
