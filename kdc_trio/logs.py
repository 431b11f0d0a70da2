"""Logging: text or one JSON object a line (`KDC_LOG_FORMAT=json`); tokens are always redacted."""

from __future__ import annotations

import json
import logging
import sys
import time

from kdc_trio.auth.redact import RedactingFilter, install_log_redaction
from kdc_trio.config import Settings


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
             "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d, ensure_ascii=False)


def setup_logging(settings: Settings, stream=None) -> logging.Handler:
    cookies = (settings.auth_token_cookie, settings.id_token_cookie)
    install_log_redaction(cookies)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter(cookies))
    if settings.log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    return handler
