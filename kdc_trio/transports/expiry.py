"""Tokens that expire, expire: the deadline of one live connection (SSE stream or Socket.IO socket).

A connection opened with a token lives until the token's `exp` + `KDC_JWT_LEEWAY_S`.
`KDC_AUTH_EXPIRING_NOTICE_S` before that, the connection is told (`chat_service`
`type: "auth.expiring"`, with `exp` and `deadline`); a fresh token of the same subject sent
in-band (`refresh`: Socket.IO `auth.refresh`, SSE `POST /sse/auth.refresh`) moves the deadline;
without one the connection is closed with `CloseReason.TOKEN_EXPIRED` after a last `chat_service`
`type: "auth.expired"`. The watch is an alarm on the process timer (util/timers.py), due at the
next notice or deadline (no task, no sweeper polling connections); a refresh re-plans it.

A connection without a token (anonymous) has no deadline. `streams` finds the deadline of a live
SSE stream of this process by its stream id (for `POST /sse/auth.refresh`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio

from kdc_trio.auth.identity import Identity
from kdc_trio.errors import ClientError
from kdc_trio.relay.message import RelayMessage
from kdc_trio.relay.outbox import CloseReason, Outbox
from kdc_trio.util.timers import Alarm, Timers
from protocol import envelope

if TYPE_CHECKING:
    from kdc_trio.config import Settings
    from kdc_trio.sessions.model import Session

# An alarm that rang before its wall-clock time (the two clocks drift apart) rings again this late.
EARLY_RETRY_S = 0.01
EXPIRING_TYPE = "auth.expiring"
EXPIRED_TYPE = "auth.expired"


class TokenDeadline:
    """When a connection's token runs out, and what a refresh may change. `arm` does something
    only when `deadline` is set at the start: a token without `exp` keeps its connection for
    good, and a refresh cannot give it a deadline later."""

    __slots__ = ("subject", "exp", "leeway_s", "notice_s", "_alarm", "_outbox", "_session", "_told_for")

    def __init__(self, identity: Identity | None, settings: "Settings") -> None:
        self.subject = identity.subject if identity is not None else None
        self.exp = identity.expires_at if identity is not None else None
        self.leeway_s = settings.jwt_leeway_s
        self.notice_s = settings.auth_expiring_notice_s
        self._alarm: Alarm | None = None  # armed (only a token with exp has one)
        self._outbox: Outbox | None = None
        self._session: "Session | None" = None
        self._told_for: float | None = None  # the exp the expiring notice was sent for

    @property
    def deadline(self) -> float | None:
        """Epoch seconds past which the connection is closed (None: never)."""
        return None if self.exp is None else self.exp + self.leeway_s

    def expired(self) -> bool:
        d = self.deadline
        return d is not None and time.time() >= d

    def check(self) -> None:
        """Refuse work on a connection whose token has run out (401 `token_expired`)."""
        if self.expired():
            raise ClientError(401, "token_expired", "the connection's token has expired: send auth.refresh "
                              "or reconnect with a fresh token")

    def refresh(self, identity: Identity | None) -> float:
        """Take a fresh token's identity: the same subject only (403 otherwise). Returns its `exp`."""
        if self.subject is None:
            raise ClientError(403, "not_authenticated", "this connection was opened without a token: reconnect "
                              "with one instead")
        if identity is None:
            raise ClientError(401, "authentication_required", "auth.refresh needs a bearer token")
        if identity.subject != self.subject:
            raise ClientError(403, "subject_mismatch", "the fresh token names another user than the connection's")
        self.exp = identity.expires_at
        self._plan()
        return self.exp or 0.0

    def arm(self, outbox: Outbox, session: "Session") -> None:
        """Tell `outbox` `auth.expiring`, then close it on expiry (see module doc); `disarm`
        before the connection ends. Nothing for a token without a deadline."""
        if self.deadline is None:
            return
        self._outbox, self._session = outbox, session
        self._alarm = Alarm(self._ring)
        self._plan()

    def disarm(self) -> None:
        if self._alarm is not None:
            Timers.cancel_alarm(self._alarm)
            self._alarm = self._outbox = self._session = None

    def _next(self) -> float | None:
        """Epoch seconds of the next step: the notice (once per exp), then the close."""
        deadline = self.deadline
        if deadline is None:
            return None
        return deadline - self.notice_s if self._told_for != self.exp else deadline

    def _plan(self, least: float = 0.0) -> None:
        when = self._next()
        if self._alarm is None or when is None:
            return
        # Epoch to trio's clock; the process timer serves it on its grid.
        Timers.shared().set_alarm(self._alarm, trio.current_time() + max(least, when - time.time()))

    def _ring(self) -> None:
        outbox, session, when = self._outbox, self._session, self._next()
        if outbox is None or session is None or when is None:
            return
        if time.time() < when:  # early by the wall clock: again a little later
            self._plan(least=EARLY_RETRY_S)
            return
        deadline = self.deadline
        assert deadline is not None
        if self._told_for != self.exp:
            self._told_for = self.exp
            outbox.offer(notice(session, EXPIRING_TYPE, {"exp": self.exp, "deadline": deadline,
                                                          "refresh_within_s": max(0.0, deadline - time.time())}))
            self._plan()
            return
        outbox.offer(notice(session, EXPIRED_TYPE, {"exp": self.exp, "reason": CloseReason.TOKEN_EXPIRED.value}))
        outbox.close(CloseReason.TOKEN_EXPIRED, f"the token expired at {self.exp} (+{self.leeway_s:g} s leeway)")
        self.disarm()


def notice(session: "Session", type_: str, data: dict) -> RelayMessage:
    """A `chat_service` notice for one connection (not logged: no seq, no SSE id)."""
    svc = envelope.ServiceCtx(request_id=type_, tenant=session.tenant or "-", project=session.project or "-",
                              user=session.user_id, user_type=session.user_type.value)
    env = envelope.service(svc, None, type=type_, data={"session_id": session.session_id, **data})
    return RelayMessage(session_id=session.session_id, event="chat_service", data=env, seq=0, timestamp=time.time())


class LiveStreams:
    """The SSE streams of this process: stream id → (session id, deadline), which a refresh may
    reach, and every live stream's outbox, which `close_all` ends when the server drains."""

    def __init__(self) -> None:
        self._streams: dict[str, tuple[str, TokenDeadline]] = {}
        self._outboxes: set[Outbox] = set()
        self.closing: CloseReason | None = None  # set by close_all: later streams close at once

    def add(self, stream_id: str, session_id: str, deadline: TokenDeadline, outbox: Outbox | None = None) -> None:
        self._streams[stream_id] = (session_id, deadline)
        if outbox is not None:
            self._outboxes.add(outbox)
            if self.closing is not None:
                outbox.close(self.closing)

    def remove(self, stream_id: str, deadline: TokenDeadline, outbox: Outbox | None = None) -> None:
        if self._streams.get(stream_id, (None, None))[1] is deadline:
            del self._streams[stream_id]
        self._outboxes.discard(outbox)

    def close_all(self, reason: CloseReason = CloseReason.SERVER_SHUTDOWN) -> None:
        """Close every live stream's outbox (its writer says why and ends the stream), and every
        stream added from now on."""
        self.closing = reason
        for outbox in list(self._outboxes):
            outbox.close(reason)

    def get(self, stream_id: str) -> tuple[str, TokenDeadline] | None:
        return self._streams.get(stream_id)
