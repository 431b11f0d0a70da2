"""The states of one Engine.IO session and the one table of moves between them.

A session starts on long-polling (`POLLING`) or directly on a WebSocket (`WEBSOCKET`). The
upgrade of a polling session: a WebSocket connects with the session's sid (`PROBING`), sends
`2probe` and gets `3probe` (`UPGRADING`: a pending poll is answered with a noop, new polls get
a noop at once), then sends `5` (`WEBSOCKET`). A failed probe returns the session to polling.
Any state may close; `CLOSED` is final. Everything not in the table is refused.
"""

from __future__ import annotations

from enum import Enum

from protocol.errors import RemoteProtocolError


class EIOState(Enum):
    POLLING = "polling"
    PROBING = "probing"
    UPGRADING = "upgrading"
    WEBSOCKET = "websocket"
    CLOSED = "closed"


class EIOEvent(Enum):
    PROBE_CONNECT = "probe_connect"  # a WebSocket arrives carrying the sid of a polling session
    PROBE = "probe"                  # it sent `2probe` (and got `3probe`)
    UPGRADE = "upgrade"              # it sent `5`
    PROBE_FAILED = "probe_failed"    # anything else, or it went away, or the deadline passed
    CLOSE = "close"


TRANSITIONS: dict[tuple[EIOState, EIOEvent], EIOState] = {
    (EIOState.POLLING, EIOEvent.PROBE_CONNECT): EIOState.PROBING,
    (EIOState.PROBING, EIOEvent.PROBE): EIOState.UPGRADING,
    (EIOState.UPGRADING, EIOEvent.PROBE): EIOState.UPGRADING,
    (EIOState.UPGRADING, EIOEvent.UPGRADE): EIOState.WEBSOCKET,
    (EIOState.PROBING, EIOEvent.PROBE_FAILED): EIOState.POLLING,
    (EIOState.UPGRADING, EIOEvent.PROBE_FAILED): EIOState.POLLING,
    **{(s, EIOEvent.CLOSE): EIOState.CLOSED for s in EIOState},
}


def initial_state(transport: str) -> EIOState:
    if transport == "polling":
        return EIOState.POLLING
    if transport == "websocket":
        return EIOState.WEBSOCKET
    raise RemoteProtocolError(f"unknown transport {transport!r}", reason="unknown_transport")


def transition(state: EIOState, event: EIOEvent) -> EIOState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise RemoteProtocolError(f"{event.value} is not allowed while the session is {state.value}",
                                  reason="bad_state") from None
