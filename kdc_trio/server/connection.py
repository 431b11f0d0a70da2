"""One TCP connection: the h11 request loop, and the Exchange a handler answers through.

A connection is one task (plus the tasks its handler opens in its own nurseries). The request
line and headers have a deadline (`KDC_READ_TIMEOUT_S`), so do a whole body however slowly it
trickles (`KDC_BODY_TIMEOUT_S`) and each silence within it (`KDC_READ_TIMEOUT_S`), the idle
time between kept-alive requests (`KDC_KEEPALIVE_TIMEOUT_S`), and every write
(`KDC_WRITE_TIMEOUT_S`): a client that stops reading is dropped when it passes — our sends are
never shielded.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, Iterable

import h11
import trio

from kdc_trio.errors import ClientError, Unavailable, unavailable
from kdc_trio.logs import REQUEST_ID, request_id_for
from kdc_trio.server.budget import BUDGET_ERROR, BodyBudget
from kdc_trio.server.hangup import HangupWatch
from kdc_trio.server.io import RECV_SIZE, ClientGone
from kdc_trio.server.request import Headers, HTTPError, Request
from kdc_trio.server.wire import Wire
from kdc_trio.util.raw_socket import raw_socket

if TYPE_CHECKING:
    from kdc_trio.config import Settings
    from kdc_trio.server.websocket import WebSocket

log = logging.getLogger("kdc_trio.http")
# A refusal's `detail` is cut to this many characters: h11's messages quote the offending request
# line, and a 40 KB line must not come back as a larger error body (traffic amplification).
REFUSAL_DETAIL_MAX = 200

# Bytes a client may send while it holds an SSE stream open (it should send none); past it
# the client is treated as gone rather than buffered without bound.
MAX_STRAY_BYTES = 64 * 1024

Handler = Callable[[Request, "Exchange"], Awaitable[None]]

REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
    415: "Unsupported Media Type", 422: "Unprocessable Entity", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    503: "Service Unavailable", 505: "HTTP Version Not Supported",
}
# What h11's error hints mean, as our `error` names (h11 raises 501 only for a transfer coding
# other than chunked, RFC 9112 §6.1).
PARSE_ERRORS = {400: "bad_request", 431: "headers_too_large", 501: "unsupported_transfer_coding"}
# The versions we speak; any other request line is answered 505 (RFC 9110 §15.6.6), not served as 1.1.
HTTP_VERSIONS = (b"1.0", b"1.1")


def own_error(group: BaseExceptionGroup) -> "ClientError | ClientGone | None":
    """What a handler's nursery wrapped (trio's exception groups are strict), when it holds only
    ClientError/ClientGone: the first ClientError, else a ClientGone; None if it holds anything else."""
    ours, rest = group.split((ClientError, ClientGone))
    if ours is None or rest is not None:
        return None
    leaves, pending = [], [ours]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return next((e for e in leaves if isinstance(e, ClientError)), leaves[0])


def error_reply(exc: ClientError) -> tuple[list[tuple[str, str]], dict]:
    """How HTTP answers a ClientError (the one place): its headers and its JSON body."""
    headers = list(exc.headers)
    if exc.status == 401:
        headers.append(("www-authenticate", 'Bearer realm="kdc-trio"'))
    if exc.retry_after:
        headers.append(("retry-after", str(exc.retry_after)))
    if exc.status == 413 and not any(k.lower() == "connection" for k, _ in headers):
        headers.append(("connection", "close"))  # the rest of the body is not read
    return headers, exc.as_dict()


def json_bytes(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Exchange:
    """One request/response: body reading, and the three ways to answer (whole, stream, upgrade)."""

    __slots__ = ("_conn", "request", "settings", "_extra", "response_started", "body_done", "upgraded", "chunked",
                 "body_deadline", "_received", "_reserved")

    def __init__(self, conn: "HTTPConnection", request: Request, extra_headers: list[tuple[str, str]]) -> None:
        self._conn = conn
        self.request = request
        self.settings = conn.settings
        self._extra = extra_headers  # e.g. CORS, added to every response of this exchange
        self.response_started = False
        self.body_done = False
        self.upgraded = False
        self.chunked = False  # a streamed response in chunked framing (start_stream)
        # The whole body must have arrived by then (KDC_BODY_TIMEOUT_S), however it trickles in;
        # KDC_READ_TIMEOUT_S bounds each silence within it.
        self.body_deadline = trio.current_time() + conn.settings.body_timeout_s
        self._received = 0  # body bytes read so far (all calls of body_chunks)
        self._reserved = 0  # of the process's budget for bodies in flight; given back by release_body()

    # ---- request body --------------------------------------------------------------------
    async def body_chunks(self, limit: int | None = None) -> AsyncIterator[bytes]:
        """The request body as it arrives; more than `limit` bytes → HTTPError 413."""
        limit = self.settings.effective_max_body_bytes if limit is None else limit
        h = self._conn.h11
        length = self.request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise HTTPError(413, "payload_too_large", f"body of {length} bytes is over the {limit}-byte limit",
                            headers=[("connection", "close")])
        if length is not None and length.isdigit() and not self.body_done:
            self._reserve(int(length))  # before the client is told to go on (100-continue)
        if h.they_are_waiting_for_100_continue:
            await self._conn.send_event(h11.InformationalResponse(status_code=100, headers=[]))
        seen = 0
        while not self.body_done:
            event = await self._conn.next_event(self.settings.read_timeout_s, mid_request=True,
                                                deadline=self.body_deadline)
            if isinstance(event, h11.Data):
                self._received += len(event.data)
                self._reserve(self._received)
                seen += len(event.data)
                if seen > limit:
                    raise HTTPError(413, "payload_too_large", f"body is over the {limit}-byte limit",
                                    headers=[("connection", "close")])
                yield event.data
            elif isinstance(event, h11.EndOfMessage):
                self.body_done = True

    def _reserve(self, total: int) -> None:
        """Hold `total` bytes of the process's body budget for this exchange (only the growth
        is taken); over the budget → HTTPError 503 (or 413)."""
        if total > self._reserved:
            self._conn.budget.reserve(total - self._reserved)
            self._reserved = total

    def release_body(self) -> None:
        """Give this exchange's share of the body budget back (the request has ended)."""
        self._conn.budget.release(self._reserved)
        self._reserved = 0

    async def read_body(self, limit: int | None = None) -> bytes:
        parts = [c async for c in self.body_chunks(limit)]
        return b"".join(parts)

    async def _drain_body(self) -> None:
        async for _ in self.body_chunks():
            pass

    # ---- whole responses -----------------------------------------------------------------
    def _headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return [*headers, *self._extra]

    async def respond(self, status: int, body: bytes = b"", *, content_type: str | None = None,
                      headers: Iterable[tuple[str, str]] = ()) -> None:
        hs = self._headers(headers)
        if content_type:
            hs.append(("content-type", content_type))
        hs.append(("content-length", str(len(body))))
        self.response_started = True
        await self._conn.send_event(h11.Response(status_code=status, headers=hs, reason=REASONS.get(status, "")))
        if body and self.request.method != "HEAD":
            await self._conn.send_event(h11.Data(data=body))
        await self._conn.send_event(h11.EndOfMessage())

    async def json(self, status: int, obj: object, *, headers: Iterable[tuple[str, str]] = ()) -> None:
        await self.respond(status, json_bytes(obj), content_type="application/json", headers=headers)

    async def error(self, status: int, error: str, detail: str = "", *,
                    headers: Iterable[tuple[str, str]] = (), extra: dict | None = None) -> None:
        await self.json(status, {"error": error, "detail": detail, **(extra or {})}, headers=headers)

    # ---- streaming responses -------------------------------------------------------------
    async def start_stream(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        if not self.body_done:
            await self._drain_body()
        self.release_body()  # what was drained is gone; a stream may live for hours
        self.response_started = True
        head = self._conn.h11.send(
            h11.Response(status_code=status, headers=self._headers(headers), reason=REASONS.get(status, "")))
        # The body's chunks are framed here (h11 keeps no state about them): the per-event path
        # is then one bytes format, no h11 event object. Unchunked (an HTTP/1.0 client): h11.
        self.chunked = b"\r\ntransfer-encoding: chunked\r\n" in head.lower()
        conn = self._conn
        if self.chunked and not conn.h11.trailing_data[0]:
            # The body is framed here from now on: h11 (~1 KiB per idle stream) can go; a stream
            # that ends cleanly gets a fresh one for the next request (as start_next_cycle would).
            conn.keep_alive = conn.h11._cstate.keep_alive  # the request's and the response's say
            conn.h11 = None
        await conn.send_raw(head)

    def frame(self, data: bytes) -> bytes:
        """`data` as one chunk of a chunked stream (after `start_stream`, when `chunked`)."""
        return b"%x\r\n%b\r\n" % (len(data), data)

    @property
    def wire(self) -> Wire:
        """The connection's byte output (server/wire.py): write-through for a chunked stream."""
        return self._conn.wire

    async def send(self, data: bytes) -> None:
        """One write (one chunk) under the write deadline; raises ClientGone if it passes."""
        if self.chunked:  # an empty `data` still sends what a write-through left pending
            await self._conn.send_raw(self.frame(data) if data else b"")
        else:
            await self._conn.send_event(h11.Data(data=data))

    async def end_stream(self) -> None:
        conn = self._conn
        if conn.h11 is None:
            await conn.send_raw(b"0\r\n\r\n")  # the last chunk, no trailers
            if conn.keep_alive:
                conn.h11 = conn.new_h11()
        else:
            await self._conn.send_event(h11.EndOfMessage())

    def watch_hangup(self, on_gone: Callable[[], None]) -> bool:
        """Have the process's hang-up watch (server/hangup.py) call `on_gone` when the client goes
        (EOF, reset, or more than MAX_STRAY_BYTES sent); False when it cannot, and the caller
        waits with `wait_client_gone` in a task of its own. Undone by `unwatch_hangup`."""
        hangups = self._conn.hangups
        return hangups is not None and hangups.watch(raw_socket(self._conn.stream), on_gone)

    def unwatch_hangup(self) -> None:
        hangups = self._conn.hangups
        sock = raw_socket(self._conn.stream)
        if hangups is not None and sock is not None:
            hangups.unwatch(sock)

    async def wait_client_gone(self) -> None:
        """Return when the client closes its side (EOF) or sends more than it should."""
        stray = 0
        while True:
            try:
                data = await self._conn.stream.receive_some(RECV_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            stray += len(data)
            if stray > MAX_STRAY_BYTES:
                return

    # ---- upgrade -------------------------------------------------------------------------
    async def accept_websocket(self, *, max_message_bytes: int) -> "WebSocket":
        from kdc_trio.server.websocket import accept

        if not self.body_done:
            await self._drain_body()
        self.release_body()
        ws = await accept(self._conn, self.request, max_message_bytes=max_message_bytes, extra=self._extra)
        self.response_started = True  # only now: a refused handshake still gets its 400
        self.upgraded = True
        return ws


class _Refusal:
    """A request refused before it reached a handler: `HTTPConnection._refuse`'s arguments."""

    __slots__ = ("args",)

    def __init__(self, status: int, error: str, detail: str) -> None:
        self.args = (status, error, detail)


class HTTPConnection:
    __slots__ = ("stream", "hangups", "budget", "draining", "settings", "handler", "cors", "idle_scopes", "client",
                 "h11", "keep_alive", "_request_event", "wire")

    def __init__(self, stream: trio.abc.Stream, settings: "Settings", handler: Handler,
                 cors: Callable[[Request], list[tuple[str, str]]], idle_scopes: set[trio.CancelScope],
                 client: str | None = None, draining: trio.Event | None = None,
                 budget: BodyBudget | None = None, hangups: HangupWatch | None = None) -> None:
        self.stream = stream
        self.hangups = hangups
        self.budget = budget or BodyBudget(0)
        self.draining = draining  # once set, a finished request closes the connection
        self.settings = settings
        self.handler = handler
        self.cors = cors
        self.idle_scopes = idle_scopes
        self.client = client
        # None once a chunked stream's head is out (Exchange.start_stream): framed by us from then on.
        self.h11: h11.Connection | None = self.new_h11()
        self.keep_alive = True  # what h11 said when it was dropped
        self._request_event: h11.Request | None = None
        self.wire = Wire(stream, settings.write_timeout_s, write_through=settings.write_through)

    def new_h11(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.settings.max_header_bytes)

    async def send_event(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await self.send_raw(data)

    async def send_raw(self, data: bytes) -> None:
        """One write under the write deadline (server/wire.py); ClientGone / WriteDeadline."""
        await self.wire.send(data)

    async def next_event(self, timeout: float, *, mid_request: bool, deadline: float = float("inf")) -> h11.Event:
        """The next h11 event: within `timeout` of silence, and by `deadline` (a body's end)."""
        with trio.move_on_at(min(trio.current_time() + timeout, deadline)):
            while True:
                event = self.h11.next_event()
                if event is not h11.NEED_DATA:
                    return event
                try:
                    data = await self.stream.receive_some(RECV_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise ClientGone("connection lost") from exc
                self.h11.receive_data(data)
        if trio.current_time() >= deadline:
            raise HTTPError(408, "request_timeout", f"the body did not arrive within {self.settings.body_timeout_s}s "
                            "(KDC_BODY_TIMEOUT_S)", headers=[("connection", "close")])
        if mid_request or self.h11.trailing_data[0]:  # a request had begun: tell the client why
            raise HTTPError(408, "request_timeout", f"no bytes for {timeout}s while reading the request",
                            headers=[("connection", "close")])
        raise ClientGone("idle")

    async def run(self) -> None:
        first = True
        while True:
            if not first and self.draining is not None and self.draining.is_set():
                return  # shutting down: no next request on this connection
            timeout = self.settings.read_timeout_s if first else self.settings.keepalive_timeout_s
            first = False
            try:
                with trio.CancelScope() as idle:
                    self.idle_scopes.add(idle)
                    try:
                        event = await self.next_event(timeout, mid_request=False)
                    finally:
                        self.idle_scopes.discard(idle)
                if idle.cancelled_caught:  # server is draining and we hold no request
                    return
            except h11.RemoteProtocolError as exc:
                await self._refuse(exc.error_status_hint, PARSE_ERRORS.get(exc.error_status_hint, "bad_request"),
                                   str(exc))
                return
            except HTTPError as exc:  # the request line/headers did not arrive in time
                await self._refuse(exc.status, exc.error, exc.detail)
                return
            except ClientGone:
                return
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            self._request_event, event = event, None  # _prepare takes it: no frame keeps it alive
            # The exchange runs in this frame (no _handle frame between: an idle stream's stack
            # is this task's for hours, 10,000 of them).
            prepared = self._prepare()
            if type(prepared) is not tuple:
                await self._refuse(*prepared.args)
                return
            request, ex, rid = prepared
            prepared = None
            try:
                ok = await self._run_exchange(request, ex, rid)
            finally:
                ex.release_body()
                # What the exchange's handler set to wake its writer (a stream's outbox, a
                # WebSocket's Engine.IO socket) ends with it: kept, it would hold the handler's
                # objects, which hold this connection, in a reference cycle.
                self.wire.on_pending = None
            request = ex = None
            if not ok:
                return
            if self.h11 is None:  # a stream that did not end cleanly, or on a connection that must close
                return
            if self.h11.our_state is h11.IDLE:  # a fresh one after a stream (Exchange.end_stream)
                continue
            if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE:
                return
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _refuse(self, status: int, error: str, detail: str,
                      headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer a request we could not parse, if h11 still lets us, then give up the connection."""
        if self.h11 is None or self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        if len(detail) > REFUSAL_DETAIL_MAX:  # parser messages quote the input: never echo it at length
            detail = detail[:REFUSAL_DETAIL_MAX] + "…"
        body = json_bytes({"error": error, "detail": detail})
        try:
            await self.send_event(h11.Response(status_code=status, reason=REASONS.get(status, ""), headers=[
                ("content-type", "application/json"), ("content-length", str(len(body))), ("connection", "close"),
                *headers]))
            await self.send_event(h11.Data(data=body))
            await self.send_event(h11.EndOfMessage())
        except (ClientGone, h11.LocalProtocolError):
            pass

    def _prepare(self) -> "tuple[Request, Exchange, str] | _Refusal":
        """The request `run` left in `_request_event`, checked, and its Exchange (with its
        request id); or the refusal to answer it with before the connection ends."""
        event, self._request_event = self._request_event, None
        # h11 bounds only a header block that arrives in pieces; one that came in a single
        # read is measured here, so the limit holds however the bytes were split.
        size = len(event.method) + len(event.target) + 12 + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if size > self.settings.max_header_bytes:
            return _Refusal(431, "headers_too_large", f"request line and headers of {size} bytes are over "
                            f"the {self.settings.max_header_bytes}-byte limit (KDC_MAX_HEADER_BYTES)")
        if event.http_version not in HTTP_VERSIONS:
            return _Refusal(505, "http_version_not_supported",
                            f"HTTP/{event.http_version.decode('ascii', 'replace')} is not supported; use HTTP/1.1")
        if any(k == b"transfer-encoding" for k, _ in event.headers) and any(
                k == b"content-length" for k, _ in event.headers):
            # RFC 9112 §6.1: a request with both is a smuggling attempt or a broken proxy; the
            # body's end is ambiguous, so nothing after the headers can be trusted: refuse and close.
            return _Refusal(400, "bad_request", "both Content-Length and Transfer-Encoding (RFC 9112 §6.1)")
        try:
            request = Request(method=event.method.decode("ascii", "replace"),
                              target=event.target.decode("latin-1"),
                              headers=Headers(list(event.headers)), client=self.client,
                              http_version=event.http_version.decode("ascii", "replace"))
        except UnicodeDecodeError as exc:
            return _Refusal(400, "bad_request", str(exc))
        event = None  # the Request has what it had: a stream's frame holds no h11 event for hours
        rid = request_id_for(request.headers.get("x-request-id"))
        REQUEST_ID.set(rid)  # every log line of this request (and of tasks it starts) carries it
        return request, Exchange(self, request, [*self.cors(request), ("x-request-id", rid)]), rid

    async def _run_exchange(self, request: Request, ex: Exchange, rid: str) -> bool:
        try:
            try:
                await self.handler(request, ex)
            except BaseExceptionGroup as group:  # raised in the handler's own nursery
                own = own_error(group)
                if own is None:
                    raise
                raise own from None
            if ex.upgraded:
                return False
            if not ex.response_started:
                raise RuntimeError(f"handler for {request.method} {request.path} sent no response")
            if not ex.body_done:
                await ex._drain_body()  # keep-alive needs the unread body consumed
        except ClientError as exc:
            if ex.response_started:
                return False
            headers, body = error_reply(exc)
            if not ex.body_done and exc.status not in (408, 413) and exc.error != BUDGET_ERROR:
                # Read the unread body first: closing on a client still sending makes it see a
                # reset instead of our answer. Bounded by the body limit and the read deadline.
                try:
                    await ex._drain_body()
                except (HTTPError, ClientGone, h11.RemoteProtocolError):
                    headers.append(("connection", "close"))
            try:
                await ex.json(exc.status, body, headers=headers)
            except ClientGone:
                return False
            return not any(k.lower() == "connection" and v == "close" for k, v in headers)
        except h11.RemoteProtocolError as exc:
            await self._refuse(exc.error_status_hint, "bad_request", str(exc))
            return False
        except ClientGone:
            return False
        except Exception as exc:
            if unavailable(exc):  # Redis unreachable: not a bug, the client may retry shortly
                log.warning("%s %s: a backing service is unreachable: %s", request.method, request.path, exc)
                if not ex.response_started:
                    await self._refuse(503, "service_unavailable", "a backing service (Redis) is unreachable; "
                                       "retry shortly", [("retry-after", str(Unavailable.retry_after)),
                                                         ("x-request-id", rid)])
                return False
            # A bug in a handler: answer 500 on this connection only, log once, keep serving others.
            log.exception("handler crashed: %s %s", request.method, request.path)
            if not ex.response_started:
                await self._refuse(500, "internal_error", "the server hit an error handling this request",
                                   [("x-request-id", rid)])
            return False
        return True
