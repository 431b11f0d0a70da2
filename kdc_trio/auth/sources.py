"""Where a request's tokens come from, and which one wins.

The wire contract (ARCHITECTURE.md, "Auth"): an access token may arrive as
`Authorization: Bearer …`, Socket.IO auth `bearer_token`, SSE query `bearer_token` or the cookie
`settings.auth_token_cookie`; an ID token as the header `settings.id_token_header`, Socket.IO
auth `id_token`, query `id_token` or the cookie `settings.id_token_cookie`.

Precedence, for each of the two tokens independently:

    header  >  Socket.IO auth payload  >  query  >  cookie

Headers and the Socket.IO auth payload are both "explicit transport payload"; between the two
the header wins (it is listed first in the contract, and a Socket.IO client that sets a header
and an auth payload with different tokens is inconsistent anyway — we pick one, deterministically).

Absent, empty or whitespace-only values count as "no token here" (clients send `null` / `""`
when logged out), so the next source is tried. A value that is present but is not a string
(a number in the Socket.IO JSON payload) is a malformed credential: `AuthError("malformed_token")`,
never silently "anonymous". Extraction never verifies anything; see `Authenticator`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from kdc_trio.auth.errors import MALFORMED_TOKEN, AuthError
from kdc_trio.config import Settings

# A Cookie header can carry many pairs; past this many we stop parsing. The server's header
# limit (16 KiB by default) already bounds the work; this bounds the dict we build from it.
MAX_COOKIE_PAIRS = 256

QUERY_ACCESS_TOKEN = "bearer_token"
QUERY_ID_TOKEN = "id_token"
SIO_ACCESS_TOKEN = "bearer_token"
SIO_ID_TOKEN = "id_token"


class TokenSource(str, enum.Enum):
    HEADER = "header"
    SOCKETIO = "socketio"
    QUERY = "query"
    COOKIE = "cookie"


@dataclass(frozen=True)
class Tokens:
    """The tokens a request presented and where each came from (None = not presented)."""

    access: str | None = None
    id: str | None = None
    access_source: TokenSource | None = None
    id_source: TokenSource | None = None

    @property
    def empty(self) -> bool:
        return self.access is None and self.id is None

    def __repr__(self) -> str:  # never print the tokens themselves
        return (f"Tokens(access={'<set>' if self.access else None}, id={'<set>' if self.id else None}, "
                f"access_source={self.access_source}, id_source={self.id_source})")


def parse_cookie_header(header: str) -> dict[str, str]:
    """Parse a `Cookie:` header value into {name: value}; never raises on garbage.

    Pairs are split on `;`, name and value on the first `=`; whitespace around both is dropped
    and one pair of surrounding double quotes is removed from the value. Pairs without `=` or
    with an empty name are skipped. The first occurrence of a name wins (browsers send the
    most specific path first, RFC 6265 §5.4). Values are not URL-decoded.
    """
    if not isinstance(header, str):
        return {}
    out: dict[str, str] = {}
    for count, part in enumerate(header.split(";")):
        if count >= MAX_COOKIE_PAIRS:
            break
        name, sep, value = part.partition("=")
        if not sep:
            continue
        name = name.strip()
        value = value.strip()
        if not name or any(ord(c) < 0x21 or ord(c) == 0x7F for c in name):
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out.setdefault(name, value)
    return out


def headers_from_pairs(pairs: Iterable[tuple[bytes | str, bytes | str]]) -> dict[str, str]:
    """h11-style `[(name, value), …]` → `{lower-case name: value}` for `extract_tokens`.

    Repeated `Cookie` headers are joined with `; ` (HTTP/2 proxies split them); for any other
    repeated header the first one wins.
    """
    out: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = (raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name).lower()
        value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
        if name == "cookie" and name in out:
            out[name] = f"{out[name]}; {value}"
        else:
            out.setdefault(name, value)
    return out


def bearer_from_authorization(value: str | None) -> str | None:
    """`Bearer <token>` (scheme case-insensitive) → token; any other scheme or shape → None."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip()
    return token or None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name.lower())
    if value is None and name.lower() != name:
        value = headers.get(name)
    return value


def _clean(value: Any, where: str) -> str | None:
    """A candidate token value → the token, or None when absent/empty; non-strings are malformed."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuthError(MALFORMED_TOKEN, f"{where} is not a string")
    value = value.strip()
    return value or None


def _first(candidates: list[tuple[TokenSource, Any, str]]) -> tuple[str | None, TokenSource | None]:
    for source, value, where in candidates:
        token = _clean(value, where)
        if token is not None:
            return token, source
    return None, None


def extract_tokens(
    settings: Settings,
    *,
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    sio_auth: Mapping[str, Any] | None = None,
) -> Tokens:
    """Pick the access and ID tokens of one request by the contract's precedence.

    `headers` has lower-case keys (see `headers_from_pairs`). When `cookies` is None they are
    parsed from `headers["cookie"]`. `sio_auth` is the Socket.IO CONNECT auth payload; anything
    that is not a mapping carries no tokens. Raises `AuthError("malformed_token")` when a
    present value is not a string.
    """
    headers = headers or {}
    query = query or {}
    if cookies is None:
        cookies = parse_cookie_header(headers.get("cookie", ""))
    if not isinstance(sio_auth, Mapping):
        sio_auth = {}

    access, access_source = _first([
        (TokenSource.HEADER, bearer_from_authorization(_header(headers, "authorization")), "Authorization header"),
        (TokenSource.SOCKETIO, sio_auth.get(SIO_ACCESS_TOKEN), "auth.bearer_token"),
        (TokenSource.QUERY, query.get(QUERY_ACCESS_TOKEN), "query bearer_token"),
        (TokenSource.COOKIE, cookies.get(settings.auth_token_cookie), "access-token cookie"),
    ])
    id_token, id_source = _first([
        (TokenSource.HEADER, _header(headers, settings.id_token_header), "ID-token header"),
        (TokenSource.SOCKETIO, sio_auth.get(SIO_ID_TOKEN), "auth.id_token"),
        (TokenSource.QUERY, query.get(QUERY_ID_TOKEN), "query id_token"),
        (TokenSource.COOKIE, cookies.get(settings.id_token_cookie), "ID-token cookie"),
    ])
    return Tokens(access=access, id=id_token, access_source=access_source, id_source=id_source)
