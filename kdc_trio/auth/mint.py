"""Development tokens for `kdc-trio token`: HS256 with `KDC_JWT_SECRET`.

The token carries `sub`, `iat`, `nbf`, `exp`, a random `jti`, the roles under
`settings.roles_claim` (as a top-level claim of that exact name, which `identity.claim_at`
reads first), `preferred_username` when given, and `iss`/`aud` when the gateway is configured
to require them, so a minted token passes this gateway's own `Verifier`. `extra` is merged last
and may override any of these (tests use it to mint expired or foreign-issuer tokens).
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Iterable, Mapping

import jwt

from kdc_trio.config import Settings

MINT_ALGORITHM = "HS256"


class MintError(ValueError):
    """A token cannot be minted with these settings/arguments."""


def mint_token(
    settings: Settings,
    *,
    subject: str,
    roles: Iterable[str] = (),
    ttl_s: float = 3600,
    username: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    if not settings.jwt_secret:
        raise MintError("KDC_JWT_SECRET is not set: `kdc-trio token` signs HS256 tokens with it; "
                        "set the same secret for the server and for this command")
    if MINT_ALGORITHM not in settings.jwt_algorithms:
        raise MintError(f"KDC_JWT_ALGORITHMS does not include {MINT_ALGORITHM}: the gateway would refuse the token")
    if not isinstance(subject, str) or not subject.strip():
        raise MintError("subject must be a non-empty string")
    if ttl_s <= 0:
        raise MintError("ttl_s must be positive")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl_s),
        "jti": secrets.token_urlsafe(12),
        settings.roles_claim: list(roles),
    }
    if username:
        claims["preferred_username"] = username
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if extra:
        claims.update(extra)
    return jwt.encode(claims, settings.jwt_secret, algorithm=MINT_ALGORITHM)
