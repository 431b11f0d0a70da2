"""Parse the body of `POST /sse/chat` while it streams in: JSON or multipart/form-data.

`parse_chat_body(content_type, chunks, limits)` consumes the request body chunk by chunk and
returns the validated ChatMessage (see message.py), or raises IngressError:

- `application/json`: the body is read up to MESSAGE_MAX_BYTES (past it: 413 at once), then
  decoded as UTF-8 JSON.
- `multipart/form-data`: fed to python-multipart's streaming `MultipartParser` as it arrives.
  Fields `event_submission` (KDCube's current clients: the JSON submission with its
  `external_events`), or `message` (a JSON string: one of the older forms, or a bare string = the
  text) and `attachment_meta` (a JSON array string); file parts named `files` (or `files[]`, `file`).
  Each file part is written into one bytearray, which becomes the Attachment's data: the body
  is never held twice. Limits are checked on every chunk: a part past CHAT_MAX_UPLOAD_MB, the
  parts together past MESSAGE_MAX_BYTES, one file too many: parsing stops at once with 413.
  Unknown fields are dropped, but their bytes count toward the total.
"""

from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterable

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from kdc_trio.ingress.errors import malformed, too_large, unsupported
from kdc_trio.ingress.limits import LIMIT_FILE_BYTES, LIMIT_FILES, LIMIT_TOTAL_BYTES, Limits
from kdc_trio.ingress.message import RawFile, build_message
from kdc_trio.ingress.models import ChatMessage
from protocol.jsonbound import JSONNestingError
from protocol.jsonbound import loads as bounded_loads

JSON_TYPE = "application/json"
MULTIPART_TYPE = "multipart/form-data"
FILE_FIELDS = frozenset({"files", "files[]", "file"})
MESSAGE_FIELD = "message"
META_FIELD = "attachment_meta"
SUBMISSION_FIELD = "event_submission"  # KDCube's current clients: the whole JSON submission

# RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
MAX_BOUNDARY_CHARS = 70
# Form parts that are not files (message, attachment_meta, a few client extras). Each part costs
# parser work and header memory even when empty, so the part count is bounded:
# max_files + MAX_FORM_FIELDS parts per body.
MAX_FORM_FIELDS = 16
# Headers per part and bytes per header line: Content-Disposition and Content-Type are all a
# form part needs; python-multipart's own defaults (8 headers, 4 KiB + 128 per line) are kept.
MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 4096 + 128
# python-multipart logs a warning for every malformed body before raising; the IngressError we
# raise says the same to the transport, which logs it once. Its instances log here instead, quietly.
_PARSER_LOG = logging.getLogger(__name__ + ".parser")
_PARSER_LOG.setLevel(logging.ERROR)

# Transfer encodings that mean "bytes as they are" (RFC 7578 §4.7 deprecates the others).
_IDENTITY_ENCODINGS = frozenset({"", "binary", "7bit", "8bit"})


async def parse_chat_body(
    content_type: str | bytes | None, chunks: AsyncIterable[bytes], limits: Limits
) -> ChatMessage:
    """Read the request body from `chunks` and return the ChatMessage; raises only IngressError."""
    ctype, params = _content_type(content_type)
    if ctype == JSON_TYPE:
        return build_message(await _read_json(chunks, limits), [], limits)
    if ctype == MULTIPART_TYPE:
        form = _Form(_boundary(params), limits)
        try:
            async for chunk in chunks:
                form.feed(chunk)
            obj, files = form.finish()
        finally:
            form.close()  # the parser's callbacks are the form's bound methods: a reference cycle
        return build_message(obj, files, limits, match="filename")
    raise unsupported(f"content type must be {JSON_TYPE} or {MULTIPART_TYPE}, not {ctype!r}")


def _content_type(value: str | bytes | None) -> tuple[str, dict[bytes, bytes]]:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1")
    if not value or not value.strip():
        raise unsupported(f"missing content type: send {JSON_TYPE} or {MULTIPART_TYPE}")
    try:
        ctype, params = parse_options_header(value)
    except ValueError:
        raise malformed("unparseable Content-Type header") from None
    return ctype.decode("latin-1"), params


def _boundary(params: dict[bytes, bytes]) -> bytes:
    boundary = params.get(b"boundary")
    if not boundary:
        raise malformed("multipart/form-data without a boundary")
    if len(boundary) > MAX_BOUNDARY_CHARS:
        raise malformed(f"multipart boundary longer than {MAX_BOUNDARY_CHARS} characters")
    if any(b < 0x20 or b > 0x7E for b in boundary):
        raise malformed("multipart boundary has characters outside printable ASCII")
    return boundary


async def _read_json(chunks: AsyncIterable[bytes], limits: Limits) -> Any:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limits.max_total_bytes:
            raise too_large(
                LIMIT_TOTAL_BYTES, f"body passed {limits.max_total_bytes} bytes")
    if not body.strip():
        raise malformed("empty JSON body")
    return _loads(body, "body")


def _loads(data: bytes | bytearray, what: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise malformed(f"{what} is not UTF-8 (byte {exc.start})") from None
    try:
        return bounded_loads(text)
    except json.JSONDecodeError as exc:
        raise malformed(f"{what} is not valid JSON: {exc.msg} at {exc.pos}") from None
    except JSONNestingError as exc:
        raise malformed(f"{what} is {exc}") from None


class _Part:
    """The part being parsed: its headers, then where its bytes go."""

    __slots__ = ("headers", "name", "filename", "mime", "is_file", "buf")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.name: str | None = None
        self.filename: str | None = None
        self.mime: str | None = None
        self.is_file = False
        self.buf: bytearray | None = None  # None: an unknown field, its bytes are dropped


class _Form:
    """Callbacks for python-multipart that build the fields and files under the limits."""

    def __init__(self, boundary: bytes, limits: Limits) -> None:
        self.limits = limits
        self.total = 0  # bytes of part data so far (fields and files)
        self.parts = 0
        self.max_parts = limits.max_files + MAX_FORM_FIELDS
        self.files: list[RawFile] = []
        self.fields: dict[str, bytearray] = {}
        self.part: _Part | None = None
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.done = False
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_PART_HEADER_BYTES,
        )
        self.parser.logger = _PARSER_LOG

    def close(self) -> None:
        """Break the form <-> parser cycle and let go of every buffer, now: held in a cycle, the
        uploads of a request lived until the next full garbage collection (rounds of 16
        concurrent 20 MiB uploads grew a process to 1.9 GB). What finish() returned stays alive
        as long as its new owner keeps it."""
        self.parser.callbacks = {}
        self.files = []
        self.fields = {}
        self.part = None

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self.done:  # the epilogue after the closing boundary: ignored, but counted
            self._count(len(chunk))
            return
        try:
            self.parser.write(chunk)
        except FormParserError as exc:
            raise malformed(f"malformed multipart body: {exc}") from None

    def finish(self) -> tuple[dict[str, Any], list[RawFile]]:
        if self.parser.state != MultipartState.END:
            raise malformed("truncated multipart body: no closing boundary")
        submission = self.fields.get(SUBMISSION_FIELD)
        if submission is not None:
            if MESSAGE_FIELD in self.fields:
                raise malformed(f"form fields `{SUBMISSION_FIELD}` and `{MESSAGE_FIELD}` given together")
            value = _loads(submission, f"form field `{SUBMISSION_FIELD}`")
            if not isinstance(value, dict):
                raise malformed(f"form field `{SUBMISSION_FIELD}` must hold a JSON object")
            return value, self.files
        obj: dict[str, Any] = {}
        raw = self.fields.get(MESSAGE_FIELD)
        if raw is not None:
            value = _loads(raw, "form field `message`")
            obj = dict(value) if isinstance(value, dict) else {"message": value}
        meta = self.fields.get(META_FIELD)
        if meta is not None:
            obj[META_FIELD] = _loads(meta, "form field `attachment_meta`")
        return obj, self.files

    # -- accounting --------------------------------------------------------------------------
    def _count(self, n: int) -> None:
        self.total += n
        if self.total > self.limits.max_total_bytes:
            raise too_large(LIMIT_TOTAL_BYTES, f"body passed {self.limits.max_total_bytes} bytes")

    # -- parser callbacks (raising here stops the parser at once) -----------------------------
    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise too_large(
                LIMIT_FILES, f"form has more than {self.max_parts} parts "
                f"({self.limits.max_files} files + {MAX_FORM_FIELDS} fields)")
        self.part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += memoryview(data)[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += memoryview(data)[start:end]

    def _header_end(self) -> None:
        assert self.part is not None
        name = self.header_name.decode("latin-1").strip().lower()
        self.part.headers[name] = self.header_value.decode("latin-1").strip()
        self.header_name.clear()
        self.header_value.clear()

    def _headers_finished(self) -> None:
        part = self.part
        assert part is not None
        disposition = part.headers.get("content-disposition")
        if disposition is None:
            raise malformed("form part without Content-Disposition")
        kind, params = parse_options_header(disposition)
        if kind != b"form-data" or not params.get(b"name"):
            raise malformed("form part is not `form-data` with a name")
        encoding = part.headers.get("content-transfer-encoding", "").lower()
        if encoding not in _IDENTITY_ENCODINGS:
            raise malformed(f"unsupported Content-Transfer-Encoding {encoding!r}")
        part.name = _utf8_or_latin1(params[b"name"])
        filename = params.get(b"filename")
        part.filename = _utf8_or_latin1(filename) if filename else None
        part.mime = part.headers.get("content-type") or None
        if part.name in FILE_FIELDS:
            if len(self.files) >= self.limits.max_files:
                raise too_large(
                    LIMIT_FILES, f"more than {self.limits.max_files} attachments")
            part.is_file = True
            part.buf = bytearray()
        elif part.name in (MESSAGE_FIELD, META_FIELD, SUBMISSION_FIELD):
            if part.name in self.fields:
                raise malformed(f"form field `{part.name}` given twice")
            part.buf = self.fields[part.name] = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        assert part is not None
        n = end - start
        if part.is_file and part.buf is not None and len(part.buf) + n > self.limits.max_file_bytes:
            raise too_large(
                LIMIT_FILE_BYTES,
                f"attachment {len(self.files)} ({part.filename or 'unnamed'}) passed "
                f"{self.limits.max_file_bytes} bytes")
        self._count(n)
        if part.buf is not None:
            part.buf += memoryview(data)[start:end]

    def _part_end(self) -> None:
        part = self.part
        if part is not None and part.is_file and part.buf is not None:
            self.files.append(RawFile(part.filename, part.mime, part.buf))
        self.part = None

    def _end(self) -> None:
        self.done = True


def _utf8_or_latin1(value: bytes) -> str:
    # Browsers send raw UTF-8 in quoted parameters; anything else is read as Latin-1.
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")
