"""What the Engine.IO server is configured with and serves: its limits (`KDC_EIO_*`), the
application protocol on top of it, and the client-address key per-address caps count by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kdc_trio.config import Settings
    from kdc_trio.transports.eio_server import EIOSocket


@dataclass(frozen=True, kw_only=True)
class EIOLimits:
    """What one process's Engine.IO sessions may cost (settings `KDC_EIO_*`; 0 = no cap)."""

    max_sessions: int = 10000  # sessions open at once; past it a handshake gets 503
    max_sessions_per_address: int = 0  # per client address; past it a handshake gets 429
    handshake_timeout_s: float = 10.0  # a polling session never polled, posted to or upgraded ends then
    max_packets: int = 1000  # packets in one polling POST; more → 400 and the session closed

    @classmethod
    def from_settings(cls, s: "Settings") -> "EIOLimits":
        return cls(max_sessions=s.eio_max_sessions, max_sessions_per_address=s.eio_max_sessions_per_address,
                   handshake_timeout_s=s.eio_handshake_timeout_s, max_packets=s.eio_max_packets)


def client_host(client: str | None) -> str:
    """The address part of `host:port` (IPv6 too): what per-address caps count by."""
    return (client or "").rpartition(":")[0] or (client or "")


class EIOApp(Protocol):
    """What runs on top of Engine.IO (Socket.IO, or the conformance echo)."""

    def on_open(self, sock: "EIOSocket") -> None:
        """A new socket (after its handshake); no task of its own: set alarms (util/timers.py)."""

    def pull(self, sock: "EIOSocket") -> None:
        """Queue on `sock` what the app has ready for it (`sock.send_many`): called by the
        transport that is about to write (the WebSocket's task, a poll). What is not pulled yet
        waits in the app (a Socket.IO outbox, where a slow client's deltas merge); the app
        `sock.wake()`s the transport when it has something."""

    async def on_message(self, sock: "EIOSocket", data: str | bytes) -> None:
        """One Engine.IO message from the client, in order."""

    def on_close(self, sock: "EIOSocket", reason: str) -> None:
        """The socket is gone (called once)."""
