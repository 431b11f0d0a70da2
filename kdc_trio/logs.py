"""Logging: text or one JSON object a line (`KDC_LOG_FORMAT=json`); tokens are always redacted.

Every line logged while an HTTP request is handled carries its request id (`request_id` in JSON,
`[rid]` in text): the HTTP server sets it per request in a context variable, which the tasks a
request starts inherit. A client's `X-Request-ID` is kept when it is a plain token (letters,
digits, `._-`, at most 64), so a proxy's id follows the request; else a new one is made. The
response carries it back in `X-Request-ID`.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import sys
import time

from kdc_trio.auth.redact import RedactingFilter, install_log_redaction
from kdc_trio.config import Settings


REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("kdc_request_id", default=None)
_CLIENT_RID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PREFIX = os.urandom(4).hex()
_NEXT = itertools.count(1)


def request_id_for(client_value: str | None) -> str:
    """The client's X-Request-ID when it is a plain short token, else a new process-unique id."""
    if client_value and _CLIENT_RID.fullmatch(client_value):
        return client_value
    return f"{_PREFIX}-{next(_NEXT):x}"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
             "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        rid = getattr(record, "request_id", None)
        if rid is not None:
            d["request_id"] = rid
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d, ensure_ascii=False)


def setup_logging(settings: Settings, stream=None) -> logging.Handler:
    cookies = (settings.auth_token_cookie, settings.id_token_cookie)
    install_log_redaction(cookies)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter(cookies))
    handler.addFilter(RequestIdFilter())
    if settings.log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    return handler


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return line if rid is None else f"{line} [rid={rid}]"
