"""The one error type of ingress: a refusal of a chat message, carrying the reply to send.

Every problem a client can cause while posting a turn (SSE `POST /sse/chat` or Socket.IO
`chat_message`) ends in an `IngressError`, a `ClientError` (kdc_trio/errors.py): the transports
render it as HTTP `status` with JSON `as_dict()`, or in the Socket.IO event's ack.

Statuses:
- 413 `payload_too_large`: a size limit; `limit` names the setting (e.g. `CHAT_MAX_UPLOAD_MB`).
- 422 `invalid_message`: a well-formed body whose content we refuse (bad ids, wrong types).
- 400 `bad_request`: a malformed body (bad JSON, bad boundary, truncated multipart, not UTF-8).
- 415 `unsupported_media_type`: neither `application/json` nor `multipart/form-data`.
"""

from __future__ import annotations

from typing import Any

from kdc_trio.errors import ClientError
from protocol.errors import RemoteProtocolError

PAYLOAD_TOO_LARGE = "payload_too_large"
INVALID_MESSAGE = "invalid_message"
BAD_REQUEST = "bad_request"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"

# WebSocket close codes, should a transport close instead of answering (RFC 6455 §7.4.1).
_CLOSE_TOO_BIG = 1009
_CLOSE_POLICY = 1008


class IngressError(ClientError, RemoteProtocolError):
    """A chat message refused: `status` and `error` for the reply, `detail` for humans,
    `limit` = the environment name of the violated setting (size limits only)."""

    def __init__(self, status: int, error: str, detail: str, limit: str | None = None) -> None:
        RemoteProtocolError.__init__(
            self,
            detail,
            error_status_hint=status,
            close_code_hint=_CLOSE_TOO_BIG if status == 413 else _CLOSE_POLICY,
            reason=error,
        )
        ClientError.__init__(self, status, error, detail, limit=limit, message=detail)
        # The refused request's own ids, when it named valid ones: the refusal's chat_error carries them.
        self.conversation_id: str | None = None
        self.turn_id: str | None = None

    def __repr__(self) -> str:
        lim = f", limit={self.limit!r}" if self.limit else ""
        return f"IngressError({self.status}, {self.error!r}, {self.detail!r}{lim})"


def optional_field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """`obj[key]` when absent/None or of `kind` (bools are never ints); else the 422."""
    value = obj.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        names = {str: "a string", dict: "an object", list: "an array", int: "an integer"}
        raise invalid(f"{where}.{key} must be {names.get(kind, kind.__name__)}")
    return value


def too_large(limit: str, detail: str) -> IngressError:
    return IngressError(413, PAYLOAD_TOO_LARGE, detail, limit)


def invalid(detail: str) -> IngressError:
    return IngressError(422, INVALID_MESSAGE, detail)


def malformed(detail: str) -> IngressError:
    return IngressError(400, BAD_REQUEST, detail)


def unsupported(detail: str) -> IngressError:
    return IngressError(415, UNSUPPORTED_MEDIA_TYPE, detail)
