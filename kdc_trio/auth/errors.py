"""The two errors of the auth package.

`AuthError` is what a client causes: a token that does not verify, or a payload that is not a
token at all. It carries a short machine-readable `reason` (the transports put it in the 401
body / CONNECT_ERROR) and never the token itself. `AuthConfigError` is what the operator causes:
an unreadable key file, a JWKS without usable keys, `none` among the allowed algorithms. It is
raised at construction time so a misconfigured gateway does not start.
"""

from __future__ import annotations

from kdc_trio.errors import ClientError

# Reasons an AuthError may carry. Transports may rely on these strings; keep them stable.
MALFORMED_TOKEN = "malformed_token"
TOKEN_EXPIRED = "token_expired"
TOKEN_NOT_YET_VALID = "token_not_yet_valid"
BAD_ISSUER = "bad_issuer"
BAD_AUDIENCE = "bad_audience"
BAD_SIGNATURE = "bad_signature"
UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
UNKNOWN_KID = "unknown_kid"
NO_VERIFICATION_KEY = "no_verification_key"
MISSING_CLAIM = "missing_claim"
MISSING_SUBJECT = "missing_subject"
ID_TOKEN_MISMATCH = "id_token_mismatch"
ACCESS_TOKEN_REQUIRED = "access_token_required"
INVALID_TOKEN = "invalid_token"  # any other pyjwt rejection


class AuthError(ClientError):
    """A presented credential is invalid. Answer 401 (SSE/REST) or CONNECT_ERROR (Socket.IO).

    `reason` is one of the constants above; `detail` is a human-readable hint that never
    contains the token (safe to log and to send).
    """

    error_status_hint = 401

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(401, reason, detail or "the token was rejected", message=reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"AuthError({self.reason!r}, {self.detail!r})"


class AuthConfigError(ValueError):
    """The auth settings cannot work (bad key file, bad JWKS, `none` allowed): fail at startup."""
