"""Turn a decoded chat payload and its raw files into a validated `ChatMessage`.

Both transports end here: `/sse/chat` (JSON body, or multipart fields + file parts, see
multipart.py) and Socket.IO `chat_message` (the JSON argument + the binary arguments).

Accepted message forms (KDCube's, current and older):
    {"external_events": [...], ...}     (see external_events.py)
    {"message": {"text": "...", ...}}   {"message": {"message": "..."}}   {"message": "..."}
    {"text": "...", ...}
Optional `conversation_id` / `turn_id`, `chat_history`, `active_turn_id` / `target_turn_id`,
`tenant` / `project` and (older forms) `attachment_meta` at top level (wins), inside the message
object, or (KDCube) inside a `payload` object. `attachment_meta` is a JSON array of objects, or a
JSON string holding one.

Every limit is enforced here (text, file count, per-file size, total); the multipart parser
enforces the byte limits earlier as well, while streaming. Attachment bytes are never copied:
each `Attachment.data` is the very object the caller passed in `RawFile.data`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from kdc_trio.ingress.errors import IngressError, invalid, malformed, optional_field, too_large
from kdc_trio.ingress.limits import (
    LIMIT_FILE_BYTES,
    LIMIT_FILES,
    LIMIT_TEXT_CHARS,
    LIMIT_TOTAL_BYTES,
    Limits,
)
from kdc_trio.ingress.external_events import parse_external_events
from kdc_trio.ingress.models import PROMPT, Attachment, ChatMessage
from protocol.jsonbound import JSONNestingError
from protocol.jsonbound import loads as bounded_loads

# Conversation and turn ids end up in Redis keys, channel names and logs: letters, digits,
# `_`, `-`, `.` (not leading; no `:` which separates key parts), up to 128 characters, which fits
# UUIDs, ULIDs and KDCube's prefixed ids with room to spare.
MAX_ID_CHARS = 128
_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,%d}" % (MAX_ID_CHARS - 1))

# Longest attachment filename kept: 255 is the common filesystem limit for one name.
MAX_FILENAME_CHARS = 255
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# `type/subtype` tokens (RFC 9110 §8.3.1); parameters are dropped.
_MIME_RE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}")
OCTET_STREAM = "application/octet-stream"

MatchMode = Literal["filename", "position"]


@dataclass(frozen=True)
class RawFile:
    """One received attachment before validation: what the transport knows about it."""

    filename: str | None
    mime: str | None
    data: bytes | bytearray


def build_message(
    obj: Any, files: Sequence[RawFile], limits: Limits, *, match: str = "filename"
) -> ChatMessage:
    """Validate `obj` (the decoded JSON) with `files` and return the ChatMessage.

    KDCube's `external_events` form pairs files with its attachment events (external_events.py).
    The older forms use `attachment_meta`: `match="filename"` pairs entries with files by
    filename, the rest by position among the unpaired ones (more entries than files is an error);
    `match="position"` (Socket.IO): entry i describes file i, the counts must be equal.
    Raises only IngressError.
    """
    if match not in ("filename", "position"):
        raise ValueError(f"match must be 'filename' or 'position', not {match!r}")
    if not isinstance(obj, dict):
        raise invalid(f"the message must be a JSON object, not {_json_type(obj)}")
    try:
        return _build(obj, files, limits, match)
    except IngressError as exc:
        exc.conversation_id, exc.turn_id = _salvage_id(obj, "conversation_id"), _salvage_id(obj, "turn_id")
        raise


def _salvage_id(obj: dict[str, Any], name: str) -> str | None:
    """A refused message's own id, if it named a valid one (top level or in `message`)."""
    inner = obj.get("message")
    for value in (obj.get(name), inner.get(name) if isinstance(inner, dict) else None):
        if isinstance(value, str) and _ID_RE.fullmatch(value):
            return value
    return None


def _build(obj: dict[str, Any], files: Sequence[RawFile], limits: Limits, match: str) -> ChatMessage:
    _check_files(files, limits)
    external = None
    if obj.get("external_events") is not None:
        external = parse_external_events(obj["external_events"], len(files), limits.max_external_events)
        inner = _message_object(obj) if ("message" in obj or "text" in obj) else obj
    else:
        inner = _message_object(obj)
    text = _legacy_text(inner)
    if external is not None:
        text = "\n\n".join([*external.texts, *([text] if text else [])])
    _check_text(text, limits)

    conversation_id = _id_field(obj, inner, "conversation_id")
    turn_id = _id_field(obj, inner, "turn_id")
    if external is not None:
        attachments = [_attachment(i, raw, meta) for i, (raw, meta) in enumerate(zip(files, external.metas))]
    else:
        pairs = _pair(_attachment_meta(obj, inner, limits), files, match)
        attachments = [_attachment(i, raw, meta) for i, (raw, meta) in enumerate(pairs)]

    total = len(text.encode("utf-8")) + sum(len(f.data) for f in files)
    if total > limits.max_total_bytes:
        raise too_large(
            LIMIT_TOTAL_BYTES, f"message is {total} bytes; the limit is {limits.max_total_bytes}")
    events = external.events if external is not None else []
    if not text and not attachments and not events:
        raise invalid("empty message: no text, no attachments and no external events")

    dropped = ("attachment_meta", "external_events", "chat_history")
    payload = {k: v for k, v in inner.items() if k not in dropped}
    payload["text"] = text
    return ChatMessage(
        text=text, payload=payload, conversation_id=conversation_id, turn_id=turn_id,
        attachments=attachments, external_events=events, chat_history=_chat_history(obj, inner),
        active_turn_id=_active_turn_id(obj, inner),
        event_type=external.event_type if external is not None else PROMPT,
        tenant=_scope_field(obj, inner, "tenant"), project=_scope_field(obj, inner, "project"))


def _message_object(obj: dict[str, Any]) -> dict[str, Any]:
    """The message as a dict, from any of the older forms."""
    if "message" in obj:
        m = obj["message"]
        if isinstance(m, str):
            return {"text": m}
        if isinstance(m, dict):
            return m
        raise invalid(f"`message` must be an object or a string, not {_json_type(m)}")
    if "text" in obj:
        return obj
    raise invalid('no message: expected {"external_events": [...]}, {"message": {"text": ...}}, '
                  '{"message": "..."} or {"text": ...}')


def _legacy_text(inner: dict[str, Any]) -> str:
    """`text`, or KDCube's older `{"message": {"message": "..."}}` (never dropped silently)."""
    text = inner.get("text")
    if text is None or text == "":
        alt = inner.get("message")
        text = alt if isinstance(alt, str) else text
    if text is None:
        return ""
    if not isinstance(text, str):
        raise invalid(f"message text must be a string, not {_json_type(text)}")
    return text


def _fields(obj: dict[str, Any], inner: dict[str, Any], name: str) -> list[Any]:
    """`name` at the top level, in the message object, then in a `payload` object (KDCube)."""
    payload = obj.get("payload")
    places = [obj, inner] + ([payload] if isinstance(payload, dict) else [])
    return [p.get(name) for p in places if p.get(name) not in (None, "")]


def _chat_history(obj: dict[str, Any], inner: dict[str, Any]) -> list[Any]:
    found = _fields(obj, inner, "chat_history")
    if not found:
        return []
    if not isinstance(found[0], list):
        raise invalid(f"`chat_history` must be an array, not {_json_type(found[0])}")
    return found[0]


def _active_turn_id(obj: dict[str, Any], inner: dict[str, Any]) -> str | None:
    """KDCube's order: `target_turn_id`, then `active_turn_id`."""
    for name in ("target_turn_id", "active_turn_id"):
        found = _fields(obj, inner, name)
        if found:
            return _valid_id(name, found[0])
    return None


def _scope_field(obj: dict[str, Any], inner: dict[str, Any], name: str) -> str | None:
    found = _fields(obj, inner, name)
    if not found:
        return None
    value = found[0]
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise invalid(f"`{name}` must be 1-{MAX_ID_CHARS} characters of letters, digits, `_`, `-` or `.`")
    return value


def _check_text(text: str, limits: Limits) -> None:
    if len(text) > limits.max_text_chars:
        raise too_large(
            LIMIT_TEXT_CHARS, f"text is {len(text)} characters; the limit is {limits.max_text_chars}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON "\ud800"): not text any consumer could encode.
        raise invalid("message text is not valid Unicode (lone surrogate)") from None


def _id_field(obj: dict[str, Any], inner: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        value = inner.get(name)
    if value is None or value == "":
        return None
    return _valid_id(name, value)


def is_valid_id(value: Any) -> bool:
    """Whether `value` may be a conversation or turn id (what may go into a Redis key)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def _valid_id(name: str, value: Any) -> str:
    if not is_valid_id(value):
        raise invalid(
            f"`{name}` must be 1-{MAX_ID_CHARS} characters of letters, digits, `_`, `-` or `.`")
    return value


def _attachment_meta(obj: dict[str, Any], inner: dict[str, Any], limits: Limits) -> list[dict[str, Any]] | None:
    """The attachment_meta entries, or None when the client sent none."""
    raw = obj.get("attachment_meta")
    if raw is None and inner is not obj:
        raw = inner.get("attachment_meta")
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = bounded_loads(raw)
        except JSONNestingError as exc:
            raise malformed(f"`attachment_meta` is {exc}") from None
        except ValueError:
            raise malformed("`attachment_meta` is not valid JSON") from None
    if not isinstance(raw, list):
        raise invalid(f"`attachment_meta` must be an array, not {_json_type(raw)}")
    if len(raw) > limits.max_files:
        raise too_large(
            LIMIT_FILES, f"attachment_meta has {len(raw)} entries; the limit is {limits.max_files} files")
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise invalid(f"attachment_meta[{i}] must be an object, not {_json_type(entry)}")
        for key in ("filename", "mime"):
            optional_field(entry, key, str, f"attachment_meta[{i}]")
    return raw


def _check_files(files: Sequence[RawFile], limits: Limits) -> None:
    if len(files) > limits.max_files:
        raise too_large(LIMIT_FILES, f"{len(files)} attachments; the limit is {limits.max_files}")
    for i, f in enumerate(files):
        if len(f.data) > limits.max_file_bytes:
            raise too_large(
                LIMIT_FILE_BYTES,
                f"attachment {i} ({f.filename or 'unnamed'}) is {len(f.data)} bytes; "
                f"the limit is {limits.max_file_bytes}")


def _pair(
    metas: list[dict[str, Any]] | None, files: Sequence[RawFile], match: str
) -> list[tuple[RawFile, dict[str, Any]]]:
    if metas is None:
        if match == "position" and files:
            raise invalid(f"attachment_meta has 0 entries but {len(files)} attachments were sent")
        return [(f, {}) for f in files]
    if len(metas) > len(files) or (match == "position" and len(metas) != len(files)):
        raise invalid(
            f"attachment_meta has {len(metas)} entries but {len(files)} attachments were sent")
    if match == "position":
        return list(zip(files, metas))

    chosen: list[dict[str, Any] | None] = [None] * len(files)
    used = [False] * len(metas)
    for i, f in enumerate(files):  # by filename first, each entry used once, in order
        if f.filename is None:
            continue
        for j, m in enumerate(metas):
            if not used[j] and m.get("filename") == f.filename:
                chosen[i], used[j] = m, True
                break
    rest = iter([m for j, m in enumerate(metas) if not used[j]])
    for i in range(len(files)):  # then the leftovers by position
        if chosen[i] is None:
            chosen[i] = next(rest, {})
    return [(f, m if m is not None else {}) for f, m in zip(files, chosen)]


def _attachment(i: int, raw: RawFile, meta: dict[str, Any]) -> Attachment:
    filename = raw.filename or meta.get("filename") or f"attachment-{i + 1}"
    if len(filename) > MAX_FILENAME_CHARS:
        raise invalid(f"attachment {i}: filename longer than {MAX_FILENAME_CHARS} characters")
    if _CONTROL_RE.search(filename):
        raise invalid(f"attachment {i}: filename contains control characters")
    try:
        filename.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(f"attachment {i}: filename is not valid Unicode") from None

    part_mime = clean_mime(raw.mime)
    meta_mime = clean_mime(meta.get("mime"))
    if part_mime is None or part_mime == OCTET_STREAM:
        mime = meta_mime or part_mime or OCTET_STREAM
    else:
        mime = part_mime
    return Attachment(filename=filename, mime=mime, data=raw.data, meta=meta)


def clean_mime(value: Any) -> str | None:
    """`type/subtype` lower-cased, parameters dropped; None when absent or not a MIME type."""
    if not isinstance(value, str):
        return None
    base = value.split(";", 1)[0].strip()
    if not _MIME_RE.fullmatch(base):
        return None
    return base.lower()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
