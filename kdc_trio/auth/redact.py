"""Tokens never appear in logs.

`redact(text)` replaces, in any string:

- anything shaped like a JWT/JWS/JWE: `eyJ…` followed by 2–4 more dot-separated base64url
  segments, and any three dot-separated base64url runs of ≥ 10 characters each;
- `Bearer <credential>` (so `Authorization: Bearer …` in any rendering of a header);
- the value of `bearer_token=`, `id_token=`, `access_token=`, `refresh_token=` in a query
  string, and of those keys in a dict/JSON rendering (`'bearer_token': '…'`, `"id_token": "…"`);
- the value of the auth cookies (`NAME=value`) for the cookie names it is given.

`RedactingFilter` applies it to a `LogRecord`: the message is rendered with its args and
redacted (args are then dropped), exception and stack text are rendered and redacted, and
string extras (`extra={…}`) are redacted too; an extra whose name says "token", "secret",
"password", "authorization" or "cookie" is replaced outright. Attach it to every handler, and
call `install_log_redaction()` once at startup: it redacts every record at creation (a
log-record factory) whatever logger or handler it goes to — message, args, exception and stack;
`extra=` attributes are set after the factory runs, so those only the handler filter sees.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Iterable

REDACTED = "[REDACTED]"

_B64 = r"[A-Za-z0-9_-]"
_JWT_RE = re.compile(
    rf"eyJ{_B64}+(?:\.{_B64}*){{2,4}}"             # JWS (3 segments) or JWE (5), header `{"…`
    rf"|(?<![A-Za-z0-9_.-]){_B64}{{10,}}\.{_B64}{{10,}}\.{_B64}{{10,}}(?![A-Za-z0-9_-])"
)
_BEARER_RE = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]+")
_TOKEN_NAMES = ("bearer_token", "id_token", "access_token", "refresh_token")
_QUERY_RE = re.compile(rf"(?i)\b({'|'.join(_TOKEN_NAMES)})=([^&\s\"';,]+)")
_MAPPING_RE = re.compile(rf"(?i)(['\"]({'|'.join(_TOKEN_NAMES)})['\"]\s*:\s*['\"])([^'\"]*)")
_SENSITIVE_EXTRA = re.compile(r"(?i)token|secret|password|authorization|cookie")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _cookie_re(names: Iterable[str]) -> re.Pattern[str] | None:
    names = [n for n in names if n]
    if not names:
        return None
    return re.compile(rf"({'|'.join(re.escape(n) for n in names)})=([^;\s\"',&]+)")


class Redactor:
    """`redact` with a fixed set of cookie names (the configured auth cookies)."""

    def __init__(self, cookie_names: Iterable[str] = ("__Secure-LATC", "__Secure-LITC")) -> None:
        self._cookie_re = _cookie_re(cookie_names)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        text = _JWT_RE.sub(REDACTED, text)
        text = _BEARER_RE.sub(rf"\1\2{REDACTED}", text)
        text = _QUERY_RE.sub(rf"\1={REDACTED}", text)
        text = _MAPPING_RE.sub(rf"\1{REDACTED}", text)
        if self._cookie_re is not None:
            text = self._cookie_re.sub(rf"\1={REDACTED}", text)
        return text


_default = Redactor()


def redact(text: str) -> str:
    """Remove tokens from `text` (default cookie names; see module doc)."""
    return _default(text)


def redact_record(record: logging.LogRecord, redactor: Redactor = _default) -> None:
    """Redact a LogRecord in place (message, args, exception/stack text, string extras)."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: logging would print the raw args; never do that
        message = f"{record.msg!s} (unformattable args: {record.args!r})"
    record.msg = redactor(message)
    record.args = None
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_info = None  # formatters would render it again, unredacted
    if record.exc_text:
        record.exc_text = redactor(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor(record.stack_info)
    for name, value in list(vars(record).items()):
        if name in _STANDARD_ATTRS:
            continue
        if _SENSITIVE_EXTRA.search(name):
            setattr(record, name, REDACTED)
        elif isinstance(value, str):
            setattr(record, name, redactor(value))


class RedactingFilter(logging.Filter):
    """A logging.Filter that redacts every record it sees and always lets it through."""

    def __init__(self, cookie_names: Iterable[str] = ("__Secure-LATC", "__Secure-LITC")) -> None:
        super().__init__()
        self._redactor = Redactor(cookie_names)

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, self._redactor)
        return True


_installed: list[Redactor] = []


def install_log_redaction(cookie_names: Iterable[str] = ("__Secure-LATC", "__Secure-LITC")) -> None:
    """Redact every LogRecord at creation (wraps the log-record factory). Idempotent."""
    redactor = Redactor(cookie_names)
    if _installed:
        _installed[0] = redactor
        return
    _installed.append(redactor)
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:  # type: ignore[no-untyped-def]
        record = previous(*args, **kwargs)
        redact_record(record, _installed[0])
        return record

    logging.setLogRecordFactory(factory)
