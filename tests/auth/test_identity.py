"""Roles from the three claim styles → user type; profile fields."""

from __future__ import annotations

import pytest

from kdc_trio.auth.identity import (
    MAX_ROLES, claim_at, identity_from_claims, roles_from_claims, user_type_for,
)
from kdc_trio.sessions.model import UserType
from tests.auth.helpers import settings

S = settings(privileged_roles=("admin", "kdcube:role:super-admin"))


@pytest.mark.parametrize("claims,roles,user_type", [
    ({"sub": "u", "roles": ["admin"]}, ("admin",), UserType.PRIVILEGED),
    ({"sub": "u", "roles": ["reader"]}, ("reader",), UserType.REGISTERED),
    ({"sub": "u", "realm_access": {"roles": ["kdcube:role:super-admin", "x"]}},
     ("kdcube:role:super-admin", "x"), UserType.PRIVILEGED),
    ({"sub": "u", "realm_access": {"roles": ["offline_access"]}}, ("offline_access",), UserType.REGISTERED),
    ({"sub": "u", "cognito:groups": ["admin"]}, ("admin",), UserType.PRIVILEGED),
    ({"sub": "u", "cognito:groups": ["users"]}, ("users",), UserType.REGISTERED),
    ({"sub": "u"}, (), UserType.REGISTERED),
    ({"sub": "u", "roles": "admin"}, ("admin",), UserType.PRIVILEGED),           # single string
    ({"sub": "u", "roles": {"admin": True}}, (), UserType.REGISTERED),          # wrong shape: nothing
    ({"sub": "u", "roles": [1, None, "ok", {"x": 1}]}, ("ok",), UserType.REGISTERED),
    ({"sub": "u", "realm_access": ["admin"]}, (), UserType.REGISTERED),
    ({"sub": "u", "roles": ["a", "b"], "realm_access": {"roles": ["b", "c"]}, "cognito:groups": ["admin"]},
     ("a", "b", "c", "admin"), UserType.PRIVILEGED),                            # merged, deduplicated
])
def test_roles_and_user_type(claims, roles, user_type) -> None:
    ident = identity_from_claims(S, claims)
    assert ident.roles == roles
    assert ident.user_type is user_type
    assert ident.subject == "u"


def test_configured_dotted_claim() -> None:
    s = settings(roles_claim="resource_access.kdc.roles", privileged_roles=("ops",))
    ident = identity_from_claims(s, {"sub": "u", "resource_access": {"kdc": {"roles": ["ops"]}}, "roles": ["x"]})
    assert ident.roles == ("ops",) and ident.user_type is UserType.PRIVILEGED


def test_configured_namespaced_claim_with_dots() -> None:
    s = settings(roles_claim="https://example.com/roles", privileged_roles=("boss",))
    ident = identity_from_claims(s, {"sub": "u", "https://example.com/roles": ["boss"]})
    assert ident.user_type is UserType.PRIVILEGED


def test_claim_at() -> None:
    c = {"a": {"b": {"c": 1}}, "x.y": 2}
    assert claim_at(c, "a.b.c") == 1
    assert claim_at(c, "x.y") == 2
    assert claim_at(c, "a.z") is None
    assert claim_at(c, "a.b.c.d") is None


def test_roles_bounded() -> None:
    roles = roles_from_claims({"roles": [f"r{i}" for i in range(10_000)] + ["x" * 10_000]}, "roles")
    assert len(roles) == MAX_ROLES
    assert all(len(r) <= 256 for r in roles)


def test_user_type_for() -> None:
    assert user_type_for((), ("admin",)) is UserType.REGISTERED
    assert user_type_for(("Admin",), ("admin",)) is UserType.REGISTERED  # exact match only
    assert user_type_for(("admin",), ()) is UserType.REGISTERED


def test_profile_fields() -> None:
    access = {"sub": "u", "preferred_username": "from-access", "email": "a@x"}
    ident = identity_from_claims(S, access, {"sub": "u", "name": "From Id", "email": "id@x"})
    assert (ident.username, ident.email) == ("From Id", "id@x")
    ident = identity_from_claims(S, access)
    assert (ident.username, ident.email) == ("from-access", "a@x")
    ident = identity_from_claims(S, {"sub": "u", "cognito:username": "cog", "email": 5})
    assert (ident.username, ident.email) == ("cog", None)
