"""KDCube's current message form: a submission of `external_events`.

    {"external_events": [
        {"type": "event.user.prompt", "payload": {"event": {"text": "..."}}, ...},
        {"type": "event.user.attachment.file",
         "payload": {"event": {"filename": "a.pdf", "size": 123, "mime": "application/pdf", "file_index": 0}}},
        {"type": "my.custom.event", ...}],
     "conversation_id": "...", "turn_id": "...", "chat_history": [...], "active_turn_id": "...", ...}

The events are kept exactly as received (the bundle sees them); from them ingress reads the text
(every `event.user.prompt|followup|steer` text, in order, joined by a blank line: none is ever
dropped), the reactive type of the message (a steer anywhere makes it a steer, as in KDCube) and
the attachment metadata, each matched to its file by `file_index` (0-based position among the
files: multipart `files` parts, or Socket.IO binary arguments), the rest by order. Unknown event
types pass through untouched. Raises only IngressError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdc_trio.ingress.errors import invalid, optional_field, too_large
from kdc_trio.ingress.models import FOLLOWUP, PROMPT, STEER

TEXT_TYPES = (PROMPT, FOLLOWUP, STEER)
ATTACHMENT_PREFIX = "event.user.attachment"
LIMIT_EVENTS = "KDC_MAX_EXTERNAL_EVENTS"
# The keys a text event may hold its text under (KDCube reads them in this order).
_TEXT_KEYS = ("text", "message", "request")


@dataclass(frozen=True)
class ExternalForm:
    events: list[dict[str, Any]]
    texts: list[str]
    event_type: str
    metas: list[dict[str, Any]]  # attachment metadata, one per file, aligned to the files


def parse_external_events(raw: Any, n_files: int, max_events: int) -> ExternalForm:
    if not isinstance(raw, list):
        raise invalid(f"`external_events` must be an array, not {_kind(raw)}")
    if len(raw) > max_events:
        raise too_large(LIMIT_EVENTS, f"{len(raw)} external events; the limit is {max_events}")
    texts: list[str] = []
    types: list[str] = []
    metas: list[dict[str, Any]] = []
    for i, event in enumerate(raw):
        if not isinstance(event, dict):
            raise invalid(f"external_events[{i}] must be an object, not {_kind(event)}")
        etype = optional_field(event, "type", str, f"external_events[{i}]")
        body = (optional_field(event, "payload", dict, f"external_events[{i}]") or {}).get("event")
        if etype in TEXT_TYPES:
            types.append(etype)
            text = _event_text(i, body)
            if text:
                texts.append(text)
        elif isinstance(etype, str) and etype.startswith(ATTACHMENT_PREFIX):
            if not isinstance(body, dict):
                raise invalid(f"external_events[{i}]: an attachment event needs payload.event as an object")
            _check_meta(i, body)
            metas.append(body)
    event_type = STEER if STEER in types else (types[0] if types else PROMPT)
    return ExternalForm(events=raw, texts=texts, event_type=event_type, metas=_align(metas, n_files))


def _event_text(i: int, body: Any) -> str:
    if isinstance(body, str):
        return body
    if body is None:
        return ""
    if not isinstance(body, dict):
        raise invalid(f"external_events[{i}].payload.event must be an object or a string")
    for key in _TEXT_KEYS:
        value = body.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise invalid(f"external_events[{i}].payload.event.{key} must be a string")
        return value
    return ""


def _check_meta(i: int, body: dict[str, Any]) -> None:
    where = f"external_events[{i}].payload.event"
    for key in ("filename", "mime"):
        optional_field(body, key, str, where)
    index = optional_field(body, "file_index", int, where)
    if index is not None and index < 0:
        raise invalid(f"{where}.file_index must be a non-negative integer")


def _align(metas: list[dict[str, Any]], n_files: int) -> list[dict[str, Any]]:
    """metas[k] for file k: by `file_index` first, the rest by order. An event naming a file that
    did not come is refused; an attachment event without an index and without a file (a hosted
    reference, say) only stays in the events."""
    aligned: list[dict[str, Any] | None] = [None] * n_files
    rest: list[dict[str, Any]] = []
    for m in metas:
        index = m.get("file_index")
        if index is None:
            rest.append(m)
            continue
        if index >= n_files:
            raise invalid(f"an attachment event names file_index {index} but {n_files} file(s) came")
        if aligned[index] is not None:
            raise invalid(f"two attachment events name file_index {index}")
        aligned[index] = m
    leftovers = iter(rest)
    return [m if m is not None else next(leftovers, {}) for m in aligned]


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
