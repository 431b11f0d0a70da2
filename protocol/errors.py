"""Protocol errors, in h11's shape: each carries a hint of the reply to send.

`RemoteProtocolError` means the peer sent something we cannot accept; the hint says how
to answer it (an HTTP status, a WebSocket close code, an Engine.IO/Socket.IO reason).
`LocalProtocolError` means *we* tried to do something the protocol forbids: a bug.
Decoding untrusted bytes must raise only `RemoteProtocolError`.
"""

from __future__ import annotations


class ProtocolError(Exception):
    def __init__(
        self,
        msg: str,
        *,
        error_status_hint: int = 400,
        close_code_hint: int = 1002,
        reason: str | None = None,
    ) -> None:
        super().__init__(msg)
        self.msg = msg
        # HTTP status to answer with, when the error surfaces on an HTTP request.
        self.error_status_hint = error_status_hint
        # WebSocket close code to use, when it surfaces on a WebSocket.
        self.close_code_hint = close_code_hint
        # A short machine-readable reason (e.g. "payload_too_large"); defaults to the message.
        self.reason = reason or msg

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.msg!r}, status={self.error_status_hint})"


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; reply with the hint and drop what it sent."""


class LocalProtocolError(ProtocolError):
    """We broke the protocol: a bug in kdc-trio, never caused by input."""
