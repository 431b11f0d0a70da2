"""Tokens never reach a log line: message, args, exceptions, extras."""

from __future__ import annotations

import io
import json
import logging

import jwt
import pytest

from kdc_trio.auth import redact as redact_mod
from kdc_trio.auth.redact import REDACTED, RedactingFilter, install_log_redaction, redact
from tests.auth.helpers import SECRET, claims

TOKEN = jwt.encode(claims(sub="someone", roles=["admin"]), SECRET, algorithm="HS256")
SIG = TOKEN.rsplit(".", 1)[1]
OPAQUE = "opaqueAccessTokenValue123"  # not a JWT: caught by its position, not its shape


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(ctx)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.auth.redact")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


@pytest.mark.parametrize("msg,args", [
    ("token %s", (TOKEN,)),
    ("headers %r", ({"authorization": f"Bearer {TOKEN}"},)),
    ("headers %r", ([(b"authorization", f"Bearer {OPAQUE}".encode())],)),
    ("GET /sse/stream?stream_id=s1&bearer_token=%s&id_token=%s HTTP/1.1", (OPAQUE, OPAQUE)),
    ("auth payload %s", ({"bearer_token": OPAQUE, "id_token": OPAQUE, "tenant": "t"},)),
    ("json %s", (json.dumps({"bearer_token": OPAQUE}),)),
    ("Authorization: Bearer %s", (OPAQUE,)),
    ("cookie %s", (f"a=1; __Secure-LATC={OPAQUE}; __Secure-LITC={OPAQUE}",)),
    (f"pre-formatted {TOKEN}", ()),
    ("broken format %s %s", (TOKEN,)),  # wrong arg count: logging would print args raw
])
def test_filter_removes_tokens(captured, msg, args) -> None:
    logger, stream = captured
    logger.info(msg, *args, extra={"ctx": "-"})
    out = stream.getvalue()
    assert TOKEN not in out and SIG not in out and OPAQUE not in out, out
    assert REDACTED in out


def test_filter_keeps_ordinary_text(captured) -> None:
    logger, stream = captured
    logger.info("GET /sse/stream?stream_id=%s user=%s v=%s host=%s", "abc", "alice", "1.2.3", "api.example.com",
                extra={"ctx": "-"})
    out = stream.getvalue()
    assert "stream_id=abc user=alice v=1.2.3 host=api.example.com" in out and REDACTED not in out


def test_filter_redacts_exceptions_and_extras(captured) -> None:
    logger, stream = captured
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        logger.exception("failed", extra={"ctx": f"q=bearer_token={OPAQUE}", "access_token": OPAQUE})
    out = stream.getvalue()
    assert "ValueError" in out and TOKEN not in out and OPAQUE not in out


def test_redact_function() -> None:
    assert redact(f"x {TOKEN} y") == f"x {REDACTED} y"
    assert redact("Bearer abc.def") == f"Bearer {REDACTED}"
    assert redact("?bearer_token=abc&x=1") == f"?bearer_token={REDACTED}&x=1"
    jwe = "eyJhbGciOiJSU0EtT0FFUCJ9.aaaaaaaaaa.bbbbbbbbbb.cccccccccc.dddddddddd"
    assert redact(jwe) == REDACTED
    assert redact("") == ""


def test_install_log_redaction_redacts_every_logger(caplog) -> None:
    # As it found them: a gateway started earlier in this process may have installed it already,
    # and its factory reads `_installed` (clearing it left that factory failing on every record).
    original = logging.getLogRecordFactory()
    installed = list(redact_mod._installed)
    try:
        install_log_redaction()
        install_log_redaction()  # idempotent
        with caplog.at_level(logging.INFO):
            logging.getLogger("some.other.module").info("token=%s url=/x?id_token=%s", TOKEN, OPAQUE)
        text = caplog.text + "".join(r.getMessage() for r in caplog.records)
        assert TOKEN not in text and OPAQUE not in text and REDACTED in text
    finally:
        logging.setLogRecordFactory(original)
        redact_mod._installed[:] = installed
