"""HTTP/1.1 (h11) and WebSocket (wsproto) on trio.serve_tcp's shape: one nursery per connection."""

from kdc_trio.server.connection import Exchange
from kdc_trio.server.io import ClientGone, WriteDeadline
from kdc_trio.server.request import HTTPError, Request
from kdc_trio.server.router import Router
from kdc_trio.server.serve import Server

__all__ = ["ClientGone", "Exchange", "HTTPError", "Request", "Router", "Server", "WriteDeadline"]
