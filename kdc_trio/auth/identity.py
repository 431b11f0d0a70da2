"""Verified claims → who the user is and which user type their session gets.

Roles are read from three places and merged (order kept, duplicates dropped):

1. `settings.roles_claim` (default `roles`). Looked up first as a top-level claim of that exact
   name (so namespaced claims such as `https://example.com/roles` work), then as a dotted path
   (`resource_access.my-client.roles`).
2. Keycloak's `realm_access.roles`.
3. Cognito's `cognito:groups`.

A claim holding a list contributes its string items; a single string is one role; anything
else contributes nothing. Any role in `settings.privileged_roles` → `privileged`, otherwise a
verified token → `registered`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from kdc_trio.config import Settings
from kdc_trio.sessions.model import UserType

# Roles end up in every session record and every event filter call; an IdP that puts
# thousands of groups in a token must not blow up either. Past these, the rest is dropped.
MAX_ROLES = 256
MAX_ROLE_CHARS = 256
# Username/email are shown in UIs and logs; longer values are truncated.
MAX_NAME_CHARS = 256

KEYCLOAK_ROLES_PATH = "realm_access.roles"
COGNITO_GROUPS_CLAIM = "cognito:groups"
USERNAME_CLAIMS = ("preferred_username", "cognito:username", "username", "name")


@dataclass(frozen=True)
class Identity:
    subject: str
    username: str | None
    email: str | None
    roles: tuple[str, ...]
    user_type: UserType
    expires_at: float | None = None  # the access token's `exp` (epoch seconds): live connections end there


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """`claims[path]` if present, else follow `path` split on dots; None when missing."""
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _role_values(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def roles_from_claims(claims: Mapping[str, Any], roles_claim: str) -> tuple[str, ...]:
    """The merged, de-duplicated roles of a token (see module doc)."""
    seen: dict[str, None] = {}
    for path in (roles_claim, KEYCLOAK_ROLES_PATH, COGNITO_GROUPS_CLAIM):
        for role in _role_values(claim_at(claims, path)):
            role = role.strip()
            if role and len(role) <= MAX_ROLE_CHARS and len(seen) < MAX_ROLES:
                seen.setdefault(role, None)
    return tuple(seen)


def user_type_for(roles: tuple[str, ...], privileged_roles: tuple[str, ...]) -> UserType:
    return UserType.PRIVILEGED if set(roles) & set(privileged_roles) else UserType.REGISTERED


def _string_claim(sources: tuple[Mapping[str, Any], ...], names: tuple[str, ...]) -> str | None:
    for claims in sources:
        for name in names:
            value = claims.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()[:MAX_NAME_CHARS]
    return None


def identity_from_claims(
    settings: Settings,
    claims: Mapping[str, Any],
    profile: Mapping[str, Any] | None = None,
) -> Identity:
    """Build the Identity: `claims` (the authoritative token) give subject and roles; `profile`
    (a verified ID token, optional) is preferred for username and email, `claims` fill in.

    The caller guarantees `claims["sub"]` is a non-empty string (see `Authenticator`).
    """
    roles = roles_from_claims(claims, settings.roles_claim)
    sources = (profile, claims) if profile is not None else (claims,)
    return Identity(
        subject=claims["sub"],
        username=_string_claim(sources, USERNAME_CLAIMS),
        email=_string_claim(sources, ("email",)),
        roles=roles,
        user_type=user_type_for(roles, settings.privileged_roles),
        expires_at=_exp(claims),
    )


def _exp(claims: Mapping[str, Any]) -> float | None:
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
