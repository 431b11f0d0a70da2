"""Tokens → Identity: None only without tokens; invalid tokens raise; ID token rules; minting."""

from __future__ import annotations

import time

import jwt
import pytest

from kdc_trio.auth.authenticator import Authenticator
from kdc_trio.auth.errors import AuthError
from kdc_trio.auth.jwt_verify import Verifier
from kdc_trio.auth.mint import MintError, mint_token
from kdc_trio.auth.sources import TokenSource, Tokens, extract_tokens
from kdc_trio.sessions.model import UserType
from tests.auth.helpers import SECRET, claims, settings

S = settings(jwt_secret=SECRET, privileged_roles=("admin",))


def hs(**c) -> str:
    return jwt.encode(claims(**c), SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def auth() -> Authenticator:
    return Authenticator(S)


def reason(auth: Authenticator, tokens: Tokens) -> str:
    with pytest.raises(AuthError) as ei:
        auth.authenticate(tokens)
    return ei.value.reason


def test_no_tokens_is_anonymous(auth) -> None:
    assert auth.authenticate(Tokens()) is None


def test_access_token_gives_identity(auth) -> None:
    ident = auth.authenticate(Tokens(access=hs(sub="alice", roles=["admin"], preferred_username="al")))
    assert ident is not None
    assert (ident.subject, ident.username, ident.user_type) == ("alice", "al", UserType.PRIVILEGED)


def test_invalid_access_token_raises_never_anonymous(auth) -> None:
    assert reason(auth, Tokens(access="garbage")) == "malformed_token"
    now = int(time.time())
    assert reason(auth, Tokens(access=hs(exp=now - 3600))) == "token_expired"


def test_id_token_supplies_profile(auth) -> None:
    ident = auth.authenticate(Tokens(access=hs(sub="alice", roles=["r"]),
                                     id=hs(sub="alice", name="Alice A.", email="a@example.com", roles=["admin"])))
    assert ident is not None
    assert (ident.username, ident.email) == ("Alice A.", "a@example.com")
    assert ident.roles == ("r",) and ident.user_type is UserType.REGISTERED  # roles: access token only


def test_id_token_mismatch(auth) -> None:
    assert reason(auth, Tokens(access=hs(sub="alice"), id=hs(sub="mallory"))) == "id_token_mismatch"


def test_invalid_id_token_beside_valid_access_token(auth) -> None:
    assert reason(auth, Tokens(access=hs(sub="alice"), id="not.a.token")) == "malformed_token"
    bad = jwt.encode(claims(sub="alice"), "x" * 64, algorithm="HS256")
    assert reason(auth, Tokens(access=hs(sub="alice"), id=bad)) == "bad_signature"


def test_id_token_alone_rejected_by_default(auth) -> None:
    assert reason(auth, Tokens(id=hs(sub="alice"))) == "access_token_required"


def test_id_token_alone_opt_in() -> None:
    a = Authenticator(S, allow_id_token_only=True)
    ident = a.authenticate(Tokens(id=hs(sub="alice", email="a@x", roles=["admin"])))
    assert ident is not None and ident.subject == "alice" and ident.user_type is UserType.PRIVILEGED
    with pytest.raises(AuthError):
        a.authenticate(Tokens(id="garbage"))


@pytest.mark.parametrize("sub", [None, "", "   "])
def test_missing_subject(auth, sub) -> None:
    c = claims()
    if sub is None:
        del c["sub"]
    else:
        c["sub"] = sub
    assert reason(auth, Tokens(access=jwt.encode(c, SECRET, algorithm="HS256"))) == "missing_subject"


def test_shared_verifier() -> None:
    v = Verifier(S)
    assert Authenticator(S, verifier=v).verifier is v


def test_end_to_end_from_request_parts(auth) -> None:
    """Header token wins over a stale cookie for another user; the cookie ID token must match."""
    token = mint_token(S, subject="bob", roles=["admin"], username="bobby")
    tokens = extract_tokens(S, headers={"authorization": f"Bearer {token}",
                                        "cookie": f"{S.auth_token_cookie}={hs(sub='eve')}"})
    assert tokens.access_source is TokenSource.HEADER
    ident = auth.authenticate(tokens)
    assert ident is not None and (ident.subject, ident.username, ident.user_type) == \
        ("bob", "bobby", UserType.PRIVILEGED)


# --- mint ------------------------------------------------------------------------------------

def test_mint_roundtrip_with_iss_aud_and_custom_roles_claim() -> None:
    s = settings(jwt_secret=SECRET, jwt_issuer="kdc-dev", jwt_audience="kdc", roles_claim="realm_access.roles",
                 privileged_roles=("admin",))
    token = mint_token(s, subject="carol", roles=("admin",), ttl_s=60)
    ident = Authenticator(s).authenticate(Tokens(access=token))
    assert ident is not None and ident.subject == "carol" and ident.user_type is UserType.PRIVILEGED
    c = Verifier(s).verify(token)
    assert c["iss"] == "kdc-dev" and c["aud"] == "kdc" and 55 <= c["exp"] - c["iat"] <= 60


def test_mint_extra_overrides() -> None:
    token = mint_token(S, subject="d", extra={"exp": int(time.time()) - 3600})
    assert reason(Authenticator(S), Tokens(access=token)) == "token_expired"


def test_mint_errors() -> None:
    with pytest.raises(MintError, match="KDC_JWT_SECRET"):
        mint_token(settings(), subject="x")
    with pytest.raises(MintError):
        mint_token(S, subject="")
    with pytest.raises(MintError):
        mint_token(S, subject="x", ttl_s=0)
    with pytest.raises(MintError):
        mint_token(settings(jwt_secret=SECRET, jwt_algorithms=("RS256",)), subject="x")
