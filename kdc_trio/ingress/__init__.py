"""ingress: validates a chat message and its attachments and enforces the quotas.

Transports call `parse_chat_body` (SSE `POST /sse/chat`) or `build_message` (Socket.IO
`chat_message`, with `match="position"`); both return a ChatMessage or raise IngressError.
"""

from __future__ import annotations

from kdc_trio.ingress.errors import IngressError
from kdc_trio.ingress.limits import Limits
from kdc_trio.ingress.message import RawFile, build_message
from kdc_trio.ingress.models import Attachment, ChatMessage
from kdc_trio.ingress.multipart import parse_chat_body

__all__ = [
    "Attachment", "ChatMessage", "IngressError", "Limits", "RawFile", "build_message", "parse_chat_body",
]
