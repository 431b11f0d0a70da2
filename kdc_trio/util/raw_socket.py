"""The stdlib socket under a trio stream, for the few paths that make one non-blocking call on
it themselves (a write-through, a Redis command's first send, the hang-up watch)."""

from __future__ import annotations

import socket


def raw_socket(stream: object) -> socket.socket | None:
    """The stdlib socket under a plain trio SocketStream (TCP or Unix; trio keeps it
    non-blocking), else None (TLS, a test's memory stream)."""
    raw = getattr(getattr(stream, "socket", None), "_sock", None)
    return raw if isinstance(raw, socket.socket) else None
