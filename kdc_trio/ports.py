"""The narrow interfaces the composition root hands to transports and the turn intake.

Transports (`transports/`) and the processor's intake (`processor/submit.py`) never see the
`Gateway`: each declares here the parts it uses, as a `typing.Protocol`, and the composition
root (`gateway.py`) builds one `Ports` value that satisfies them. Nothing below imports its
composer back (tests/test_structure.py holds that line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import trio

    from kdc_trio.auth.authenticator import Authenticator
    from kdc_trio.config import Settings
    from kdc_trio.metrics import GatewayMetrics
    from kdc_trio.processor.conv_status import ConvStatusStore
    from kdc_trio.processor.queue import TurnQueue
    from kdc_trio.relay.bus import Bus
    from kdc_trio.relay.chat_relay import ChatRelayCommunicator
    from kdc_trio.relay.keys import SessionKey
    from kdc_trio.relay.outbox import Outbox
    from kdc_trio.sessions.store import SessionStore
    from kdc_trio.transports.expiry import LiveStreams


@dataclass
class Counters:
    sse_streams: int = 0
    sio_sockets: int = 0
    turns_accepted: int = 0
    turns_refused: int = 0
    closed_slow: int = 0


@runtime_checkable
class Publisher(Protocol):
    async def publish(self, key: "SessionKey", *, event: str, data: dict, target_sid: str | None = None) -> int:
        ...


@runtime_checkable
class SessionChannels(Publisher, Protocol):
    """The relay as a connection uses it (relay/chat_relay.py): membership of its session's
    channel (`join` once live, `leave` in a `finally` with what `join` returned), and a replay
    from the session log."""

    async def join(self, key: "SessionKey", outbox: "Outbox") -> object:
        ...

    def leave(self, membership: object, outbox: "Outbox") -> None:
        ...

    async def replay(self, key: "SessionKey", outbox: "Outbox", after_seq: int) -> int:
        ...


@runtime_checkable
class ServerView(Protocol):
    """What handlers may know of the HTTP server: its drain signal and its counts."""

    draining: "trio.Event"
    connections: int
    accept_errors: int


@runtime_checkable
class Statistics(Protocol):
    def statistics(self) -> dict:
        ...


@runtime_checkable
class GuardPort(Protocol):
    """The protections at the edge (`kdc_trio/protect/guard.py`): asked once per new turn or connection."""

    async def admit(self, action: str, user_type: str, session_id: str, address: str) -> None:
        ...


@runtime_checkable
class IdentifyPorts(Protocol):
    """Who is asking and which session they get (`transports/identify.py`)."""

    settings: "Settings"
    authenticator: "Authenticator"
    store: "SessionStore"


@runtime_checkable
class TurnPorts(Protocol):
    """Accepting a turn (`processor/submit.py`)."""

    settings: "Settings"
    relay: Publisher
    conv_store: "ConvStatusStore"
    queue: "TurnQueue"
    counters: Counters
    guard: GuardPort


@runtime_checkable
class ChatPorts(IdentifyPorts, TurnPorts, Protocol):
    """A streaming transport (SSE, Socket.IO): sessions, turns, the relay, the drain signal."""

    relay: SessionChannels
    server: ServerView
    streams: "LiveStreams"  # this process's live SSE streams, for POST /sse/auth.refresh


@runtime_checkable
class RestPorts(ChatPorts, Protocol):
    """The REST endpoints: also the readiness probes and the metrics' sources."""

    bus: "Bus"
    processor: Statistics | None
    metrics: "GatewayMetrics"


@dataclass(eq=False)
class Ports:
    """The one value the composition root builds for every transport (it satisfies all of the above)."""

    settings: "Settings"
    authenticator: "Authenticator"
    store: "SessionStore"
    relay: "ChatRelayCommunicator"
    conv_store: "ConvStatusStore"
    queue: "TurnQueue"
    counters: Counters
    bus: "Bus"
    server: ServerView
    processor: Statistics | None
    metrics: "GatewayMetrics"
    guard: GuardPort
    streams: "LiveStreams"
