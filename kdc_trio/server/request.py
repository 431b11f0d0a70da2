"""What a handler sees of a request, and the error it raises to refuse one."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable
from urllib.parse import parse_qsl, unquote

from kdc_trio.auth.sources import parse_cookie_header
from kdc_trio.errors import ClientError


class HTTPError(ClientError):
    """Raised by a handler to answer `status` with JSON `{error, detail}` (and extra headers)."""

    def __init__(
        self, status: int, error: str, detail: str = "", *, headers: Iterable[tuple[str, str]] = (),
        extra: dict | None = None, retry_after: int | None = None, limit: str | None = None,
    ) -> None:
        super().__init__(status, error, detail, headers=headers, retry_after=retry_after, limit=limit)
        self.extra = extra or {}  # more fields for the JSON body

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), **self.extra}


class Headers:
    """Case-insensitive view of request headers; repeated headers are joined with ', '."""

    __slots__ = ("_d",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        # Only the decoded dict is kept: a long-lived request (an idle stream's, a WebSocket's
        # handshake kept for auth) holds no second copy of its headers as bytes.
        d: dict[str, str] = {}
        for k, v in raw:
            name = k.decode("latin-1").lower()
            val = v.decode("latin-1")
            if name in d:
                d[name] = f"{d[name]}; {val}" if name == "cookie" else f"{d[name]}, {val}"
            else:
                d[name] = val
        self._d = d

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._d.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._d

    def as_dict(self) -> dict[str, str]:
        return dict(self._d)


@dataclass(kw_only=True)
class Request:
    method: str
    target: str
    headers: Headers
    client: str | None = None
    http_version: str = "1.1"
    path: str = field(init=False)
    query_string: str = field(init=False)

    def __post_init__(self) -> None:
        raw_path, _, qs = self.target.partition("?")
        self.path = unquote(raw_path) or "/"
        self.query_string = qs

    @cached_property
    def query(self) -> dict[str, str]:
        """First value of each query parameter."""
        out: dict[str, str] = {}
        for k, v in parse_qsl(self.query_string, keep_blank_values=True):
            out.setdefault(k, v)
        return out

    @cached_property
    def cookies(self) -> dict[str, str]:
        return parse_cookie_header(self.headers.get("cookie") or "")

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")
