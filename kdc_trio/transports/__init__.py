"""Transports: SSE, Socket.IO and REST, all on the same auth, sessions, turns and relay."""
