"""Shared helpers for the ingress tests: limits, body builders, chunk feeders, summaries."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Iterable, Sequence

import httpx

from kdc_trio.config import Settings
from kdc_trio.ingress import ChatMessage, Limits

BOUNDARY = "kdcTestBoundary42"
MULTIPART_CT = f"multipart/form-data; boundary={BOUNDARY}"

DEFAULT_LIMITS = Limits.from_settings(Settings.from_env({}))


def small_limits(**kw: int) -> Limits:
    base = dict(max_file_bytes=1000, max_files=3, max_total_bytes=5000, max_text_chars=100)
    base.update(kw)
    return Limits(**base)


def part(name: str, data: bytes, *, filename: str | None = None, ctype: str | None = None,
         extra_headers: Sequence[str] = ()) -> bytes:
    disp = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disp += f'; filename="{filename}"'
    lines = [disp]
    if ctype is not None:
        lines.append(f"Content-Type: {ctype}")
    lines.extend(extra_headers)
    head = "\r\n".join(lines).encode("utf-8")
    return b"--" + BOUNDARY.encode() + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY.encode() + b"--\r\n"


def httpx_form(data: dict[str, str], files: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[str, bytes]:
    req = httpx.Request("POST", "http://127.0.0.1/sse/chat", data=data, files=files)
    return req.headers["content-type"], req.read()


def jbody(obj: Any) -> bytes:
    return json.dumps(obj).encode()


async def feed(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


def split(body: bytes, sizes: Iterable[int]) -> list[bytes]:
    out, i = [], 0
    for n in sizes:
        if i >= len(body):
            break
        out.append(body[i:i + n])
        i += n
    if i < len(body):
        out.append(body[i:])
    return out


def summary(m: ChatMessage) -> tuple[Any, ...]:
    return (m.text, m.payload, m.conversation_id, m.turn_id,
            [(a.filename, a.mime, bytes(a.data), a.meta) for a in m.attachments])
