"""The one family of errors a client can cause: `ClientError` and its subclasses.

A refusal carries its reply: `status` (the HTTP status, also told to Socket.IO clients), a
short machine-readable `error`, a human `detail`, and optionally `retry_after` (seconds) and
`limit` (the environment name of the violated setting). Whoever refuses raises it; nobody
translates it by hand. Each transport renders it in one place:

- HTTP (SSE, REST): `server/connection.py` answers `status` with JSON `{error, detail[, limit]}`
  (`WWW-Authenticate` on 401, `Retry-After` when set, `Connection: close` on 413);
- Socket.IO CONNECT: `transports/sio_app.py` sends CONNECT_ERROR `{message: error, data: {status, detail}}`;
- Socket.IO events: `transports/socketio.py` acks `{error, detail, status[, limit]}`.

Subclasses name where a refusal comes from (`AuthError`, `SessionError`, `IngressError`,
`QueueFull`, `HTTPError`); they add no reply of their own.
"""

from __future__ import annotations

from typing import Any, Iterable


class ClientError(Exception):
    def __init__(self, status: int, error: str, detail: str = "", *, retry_after: int | None = None,
                 limit: str | None = None, headers: Iterable[tuple[str, str]] = (),
                 message: str | None = None) -> None:
        # Exception's own __init__, not super(): a subclass may also be a ProtocolError (IngressError)
        # whose fields it sets itself.
        Exception.__init__(self, f"{status} {error}: {detail}" if message is None else message)
        self.status = status
        self.error = error
        self.detail = detail
        self.retry_after = retry_after
        self.limit = limit
        self.headers = list(headers)  # more HTTP headers for the reply (HTTP only)

    def as_dict(self) -> dict[str, Any]:
        """The JSON reply body: `{error, detail}` plus `limit` when a limit was violated."""
        body: dict[str, Any] = {"error": self.error, "detail": self.detail}
        if self.limit is not None:
            body["limit"] = self.limit
        return body


class Unavailable(Exception):
    """Not a client's error and not a bug: a service the gateway depends on (Redis) cannot be
    reached right now. `RedisConnectionError` is one. An HTTP request that fails on it is answered
    503 `service_unavailable` with `Retry-After` (server/connection.py), not a 500."""

    retry_after = 1


def unavailable(exc: BaseException) -> bool:
    """Is `exc` (or every leaf of an exception group) an `Unavailable`?"""
    if isinstance(exc, BaseExceptionGroup):
        return all(unavailable(e) for e in exc.exceptions)
    return isinstance(exc, Unavailable)
