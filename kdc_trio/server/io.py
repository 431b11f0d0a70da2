"""What the HTTP connection and its WebSocket upgrade share: the read size and ClientGone.

Its own module so that `websocket.py` needs nothing from `connection.py` at run time (the
connection imports the WebSocket upgrade; the two never import each other).
"""

from __future__ import annotations

# One read's worth: large enough that a 20 MiB upload is ~320 reads, small enough to keep
# per-connection memory modest at 10k idle connections (the buffer is transient).
RECV_SIZE = 64 * 1024


class ClientGone(Exception):
    """The client went away or stopped reading (write deadline passed)."""


class WriteDeadline(ClientGone):
    """The client stopped reading: a write did not finish within KDC_WRITE_TIMEOUT_S."""
