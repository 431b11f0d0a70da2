"""Socket.IO connection-state recovery (socket.io v4.6+), on the session log.

The official client does it by itself when the server speaks it:

- the CONNECT reply carries `pid`, a private session id (random, 144 bits);
- every session-log event carries its offset — the session sequence, as a string — as a last
  argument (`42["chat_delta",{...},"17"]`); events that are not in the log (project-wide,
  `session_info`, `pong`, `stream.gap`, acks) never end with a string, so the client's offset
  (the last string argument it saw) only ever names a logged event;
- a reconnecting client merges `{pid, offset}` into its CONNECT auth. When the pid is known, was
  issued to the same session and the same user (the caller still authenticates as always), the
  socket is *recovered*: the CONNECT reply repeats the pid (the client then sets
  `socket.recovered = true`), the socket keeps the old `sid` — its `stream_id`, so the rest of
  an in-flight turn (events targeted to it) still reaches it — and the log after `offset` is
  replayed before anything new. Any other pid: a fresh socket with a new pid (never an error).

The pid record (`RecoveryRecord`: session, user, stream, position when issued) lives in the
session store (Redis with `KDC_REDIS_URL`: any gateway resumes any pid) for
`KDC_SESSION_LOG_TTL_S`, refreshed on every connect. Clients that do not speak it
(python-socketio, whose handlers take the arguments they expect) get neither pid nor offsets
(`KDC_SIO_RECOVERY=auto`) and resume with `last_event_id` in their auth, as before.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from kdc_trio.sessions.store import RecoveryRecord

if TYPE_CHECKING:
    from kdc_trio.ports import ChatPorts

log = logging.getLogger("kdc_trio.socketio")

# A pid we issue is 24 characters; anything much longer is not one of ours.
MAX_PID = 64
# User-Agent prefixes of Python HTTP stacks (python-socketio's aiohttp / requests / websocket-client).
PYTHON_AGENTS = ("python", "aiohttp")


@dataclass(frozen=True, slots=True)
class RecoveryRequest:
    """What a CONNECT asks for: offsets on this socket, and the pid it resumes (if any)."""

    offsets: bool
    pid: str | None
    record: RecoveryRecord | None


def speaks_recovery(mode: str, auth: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    """Whether this socket gets pid + offsets: the client sent a pid (it speaks it), its auth says
    `recovery: true/false`, or `KDC_SIO_RECOVERY` (`auto`: not for Python clients)."""
    if isinstance(auth.get("pid"), str):
        return True
    flag = auth.get("recovery")
    if isinstance(flag, bool):
        return flag
    if mode != "auto":
        return mode == "on"
    agent = headers.get("user-agent", "").lower()
    return not agent.startswith(PYTHON_AGENTS)


async def recovery_request(gw: "ChatPorts", auth: Mapping[str, Any], headers: Mapping[str, str]) -> RecoveryRequest:
    offsets = speaks_recovery(gw.settings.sio_recovery, auth, headers)
    pid = auth.get("pid")
    if not offsets or not isinstance(pid, str) or not pid or len(pid) > MAX_PID:
        return RecoveryRequest(offsets, None, None)
    return RecoveryRequest(True, pid, await gw.store.recovery(pid))


def recovered(record: RecoveryRecord | None, session_id: str, user_id: str | None) -> bool:
    """A pid resumes only the session and the user it was issued to."""
    return record is not None and record.session_id == session_id and record.user_id == user_id


def resume_after(auth: Mapping[str, Any], record: RecoveryRecord | None) -> int | None:
    """The seq to replay after: `last_event_id` (python-socketio, SSE ids), else the recovery
    `offset`, else — for a recovered socket that had seen no event — the position its pid had."""
    for name in ("last_event_id", "offset"):
        value = auth.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
            return int(value)
    return record.seq if record is not None else None


def new_pid() -> str:
    return secrets.token_urlsafe(18)


async def keep_pid(gw: "ChatPorts", pid: str, record: RecoveryRecord) -> bool:
    """Store (or refresh) the pid's record; False if the store failed (the socket then gets no pid)."""
    try:
        await gw.store.put_recovery(pid, record, gw.settings.session_log_ttl_s)
        return True
    except Exception as exc:
        log.warning("Socket.IO recovery pid not stored (%s): the socket will not be recoverable", exc)
        return False
