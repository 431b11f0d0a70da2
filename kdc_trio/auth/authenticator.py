"""Tokens → Identity: the one call the transports make.

    authenticator = Authenticator(settings)          # once per process: loads the keys
    identity = authenticator.authenticate(tokens)    # per request / connect

`authenticate` returns None only when no token was presented at all (the session stays
anonymous, or the transport refuses it under `CHAT_*_REJECT_ANONYMOUS`). Any presented token
that does not verify raises `AuthError` — an invalid token is never silently anonymous.

Rules:

- The access token is the authority: its `sub` is the subject and its claims give the roles.
  `sub` must be a non-empty string (`missing_subject`).
- An ID token presented beside it must verify too (same keys, same iss/aud rules) and carry the
  same `sub` (`id_token_mismatch` otherwise). It only supplies the profile: username
  (`preferred_username`, `name`, …) and email.
- An ID token *without* an access token is rejected: `AuthError("access_token_required")`.
  Why: an ID token is a statement to the client about who logged in, not a credential for an API
  (OIDC Core §2; its `aud` is the client), and it does not reliably carry the roles (Keycloak puts
  realm roles in the access token only), so accepting it would quietly hand out a different user
  type. A client in that state — typically an expired access cookie next to a live ID cookie —
  gets 401 and refreshes. Deployments that really authenticate with ID tokens alone can opt in
  with `Authenticator(settings, allow_id_token_only=True)`: the ID token is then the identity
  (subject, roles and profile all from it).
"""

from __future__ import annotations

from typing import Any, Mapping

from kdc_trio.auth.errors import (
    ACCESS_TOKEN_REQUIRED, ID_TOKEN_MISMATCH, MISSING_SUBJECT, AuthError,
)
from kdc_trio.auth.identity import Identity, identity_from_claims
from kdc_trio.auth.jwt_verify import Verifier
from kdc_trio.auth.sources import Tokens
from kdc_trio.config import Settings


def _subject(claims: Mapping[str, Any]) -> str:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise AuthError(MISSING_SUBJECT, "the token has no `sub`")
    return sub


class Authenticator:
    def __init__(
        self,
        settings: Settings,
        *,
        verifier: Verifier | None = None,
        allow_id_token_only: bool = False,
    ) -> None:
        self.settings = settings
        self.verifier = verifier if verifier is not None else Verifier(settings)
        self.allow_id_token_only = allow_id_token_only

    def authenticate(self, tokens: Tokens) -> Identity | None:
        """None without tokens; the verified Identity; or `AuthError` (see module doc)."""
        if tokens.access is None and tokens.id is None:
            return None
        if tokens.access is None:
            if not self.allow_id_token_only:
                raise AuthError(ACCESS_TOKEN_REQUIRED, "an ID token alone does not authenticate")
            id_claims = self.verifier.verify(tokens.id)  # type: ignore[arg-type]
            _subject(id_claims)
            return identity_from_claims(self.settings, id_claims, id_claims)
        claims = self.verifier.verify(tokens.access)
        subject = _subject(claims)
        profile = None
        if tokens.id is not None:
            profile = self.verifier.verify(tokens.id)
            if profile.get("sub") != subject:
                raise AuthError(ID_TOKEN_MISMATCH, "the ID token names another subject")
        return identity_from_claims(self.settings, claims, profile)
