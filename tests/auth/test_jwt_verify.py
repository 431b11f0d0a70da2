"""JWT verification: accepted algorithms and keys, and every rejection with its reason."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

from kdc_trio.auth.errors import AuthConfigError, AuthError
from kdc_trio.auth.jwt_verify import MAX_TOKEN_CHARS, Verifier
from tests.auth.helpers import SECRET, claims, settings


def reason(verifier: Verifier, token) -> str:
    with pytest.raises(AuthError) as ei:
        verifier.verify(token)
    assert str(ei.value) == ei.value.reason
    return ei.value.reason


def b64(obj) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def hs() -> Verifier:
    return Verifier(settings(jwt_secret=SECRET))


@pytest.fixture
def pem_path(tmp_path, rsa_a):
    p = tmp_path / "rsa.pem"
    p.write_bytes(rsa_a.public_pem)
    return str(p)


# --- accepted ------------------------------------------------------------------------------

def test_hs256_accepted(hs) -> None:
    token = jwt.encode(claims(roles=["x"]), SECRET, algorithm="HS256")
    got = hs.verify(token)
    assert got["sub"] == "user-1" and got["roles"] == ["x"]


def test_rs256_jwks_two_keys_kid_selection(jwks_path, rsa_a, rsa_b) -> None:
    v = Verifier(settings(jwks_file=jwks_path))
    for pair, sub in ((rsa_a, "alice"), (rsa_b, "bob")):
        token = jwt.encode(claims(sub), pair.private, algorithm="RS256", headers={"kid": pair.jwk["kid"]})
        assert v.verify(token)["sub"] == sub
    # signed with key b but naming key a: the kid picks a, the signature fails
    crossed = jwt.encode(claims(), rsa_b.private, algorithm="RS256", headers={"kid": "key-a"})
    assert reason(v, crossed) == "bad_signature"


def test_jwks_unknown_kid_and_missing_kid_with_two_keys(jwks_path, rsa_a) -> None:
    v = Verifier(settings(jwks_file=jwks_path))
    assert reason(v, jwt.encode(claims(), rsa_a.private, algorithm="RS256", headers={"kid": "nope"})) == "unknown_kid"
    assert reason(v, jwt.encode(claims(), rsa_a.private, algorithm="RS256")) == "unknown_kid"


def test_jwks_single_key_without_kid_in_token(tmp_path, rsa_a) -> None:
    p = tmp_path / "one.json"
    p.write_text(json.dumps({"keys": [rsa_a.jwk]}))
    v = Verifier(settings(jwks_file=str(p)))
    assert v.verify(jwt.encode(claims(), rsa_a.private, algorithm="RS256"))["sub"] == "user-1"
    assert reason(v, jwt.encode(claims(), rsa_a.private, algorithm="RS256", headers={"kid": "x"})) == "unknown_kid"


def test_es256_via_pem(tmp_path, ec_key, rsa_a) -> None:
    p = tmp_path / "ec.pem"
    p.write_bytes(ec_key.public_pem)
    v = Verifier(settings(jwt_public_key_file=str(p)))
    token = jwt.encode(claims(), ec_key.private, algorithm="ES256", headers={"kid": "whatever"})
    assert v.verify(token)["sub"] == "user-1"
    other = jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    assert reason(v, other) == "bad_signature"
    # an RS256 token cannot be checked with an EC key
    assert reason(v, jwt.encode(claims(), rsa_a.private, algorithm="RS256")) == "unsupported_algorithm"
    # ES384 is not in the default allow-list
    p384 = ec.generate_private_key(ec.SECP384R1())
    assert reason(v, jwt.encode(claims(), p384, algorithm="ES384")) == "unsupported_algorithm"


def test_rs256_via_pem(pem_path, rsa_a, rsa_b) -> None:
    v = Verifier(settings(jwt_public_key_file=pem_path))
    assert v.verify(jwt.encode(claims(), rsa_a.private, algorithm="RS256"))["sub"] == "user-1"
    assert reason(v, jwt.encode(claims(), rsa_b.private, algorithm="RS256")) == "bad_signature"
    # the EC algorithm against an RSA key: refused before pyjwt is asked
    ec_priv = ec.generate_private_key(ec.SECP256R1())
    assert reason(v, jwt.encode(claims(), ec_priv, algorithm="ES256")) == "unsupported_algorithm"


def test_secret_and_jwks_together(jwks_path, rsa_a) -> None:
    v = Verifier(settings(jwt_secret=SECRET, jwks_file=jwks_path))
    assert v.verify(jwt.encode(claims("h"), SECRET, algorithm="HS256"))["sub"] == "h"
    assert v.verify(jwt.encode(claims("r"), rsa_a.private, algorithm="RS256", headers={"kid": "key-a"}))["sub"] == "r"


# --- rejected ------------------------------------------------------------------------------

def test_expired(hs) -> None:
    now = int(time.time())
    assert reason(hs, jwt.encode(claims(exp=now - 3600, iat=now - 7200), SECRET, algorithm="HS256")) == "token_expired"


def test_leeway_applies() -> None:
    v = Verifier(settings(jwt_secret=SECRET, jwt_leeway_s=30))
    now = int(time.time())
    assert v.verify(jwt.encode(claims(exp=now - 10), SECRET, algorithm="HS256"))
    assert v.verify(jwt.encode(claims(nbf=now + 10), SECRET, algorithm="HS256"))
    strict = Verifier(settings(jwt_secret=SECRET, jwt_leeway_s=0))
    assert reason(strict, jwt.encode(claims(exp=now - 10), SECRET, algorithm="HS256")) == "token_expired"


def test_not_yet_valid(hs) -> None:
    now = int(time.time())
    assert reason(hs, jwt.encode(claims(nbf=now + 3600), SECRET, algorithm="HS256")) == "token_not_yet_valid"
    assert reason(hs, jwt.encode(claims(iat=now + 3600), SECRET, algorithm="HS256")) == "token_not_yet_valid"


def test_missing_exp_refused(hs) -> None:
    assert reason(hs, jwt.encode({"sub": "u"}, SECRET, algorithm="HS256")) == "missing_claim"


def test_issuer() -> None:
    v = Verifier(settings(jwt_secret=SECRET, jwt_issuer="https://idp.example"))
    assert v.verify(jwt.encode(claims(iss="https://idp.example"), SECRET, algorithm="HS256"))
    assert reason(v, jwt.encode(claims(iss="https://evil.example"), SECRET, algorithm="HS256")) == "bad_issuer"
    assert reason(v, jwt.encode(claims(), SECRET, algorithm="HS256")) == "bad_issuer"


def test_audience() -> None:
    v = Verifier(settings(jwt_secret=SECRET, jwt_audience="kdc"))
    assert v.verify(jwt.encode(claims(aud="kdc"), SECRET, algorithm="HS256"))
    assert v.verify(jwt.encode(claims(aud=["other", "kdc"]), SECRET, algorithm="HS256"))
    assert reason(v, jwt.encode(claims(aud="other"), SECRET, algorithm="HS256")) == "bad_audience"
    assert reason(v, jwt.encode(claims(), SECRET, algorithm="HS256")) == "bad_audience"


def test_audience_not_configured_accepts_any_aud(hs) -> None:
    # Keycloak access tokens carry aud="account"; without KDC_JWT_AUDIENCE it is not checked.
    assert hs.verify(jwt.encode(claims(aud="account"), SECRET, algorithm="HS256"))


def test_bad_signature(hs) -> None:
    token = jwt.encode(claims(), "another-secret-that-is-also-long-enough-000000", algorithm="HS256")
    assert reason(hs, token) == "bad_signature"
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    h, p, s = good.split(".")
    tampered = ".".join([h, b64(claims(sub="admin")), s])
    assert reason(hs, tampered) == "bad_signature"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_rejected(hs, alg) -> None:
    token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims())}."
    assert reason(hs, token) == "unsupported_algorithm"


def test_alg_none_pyjwt_encoded(hs) -> None:
    assert reason(hs, jwt.encode(claims(), None, algorithm="none")) == "unsupported_algorithm"


def test_hs256_signed_with_rsa_public_key_rejected(pem_path, jwks_path, rsa_a) -> None:
    """Algorithm confusion: the RSA public key (PEM bytes, or its JWK) used as an HMAC secret."""
    import hashlib
    import hmac
    header = b64({"alg": "HS256", "typ": "JWT", "kid": "key-a"})
    payload = b64(claims(sub="attacker"))
    sig = hmac.new(rsa_a.public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64(sig)}"
    # only asymmetric keys configured: no HMAC key exists to check it with
    assert reason(Verifier(settings(jwt_public_key_file=pem_path)), forged) == "no_verification_key"
    assert reason(Verifier(settings(jwks_file=jwks_path)), forged) == "no_verification_key"
    # with a secret configured as well, the token is checked against the secret only
    assert reason(Verifier(settings(jwt_public_key_file=pem_path, jwt_secret=SECRET)), forged) == "bad_signature"


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")
def test_algorithm_not_in_allow_list(pem_path, rsa_a) -> None:
    v = Verifier(settings(jwt_secret=SECRET, jwt_public_key_file=pem_path, jwt_algorithms=("RS256",)))
    assert reason(v, jwt.encode(claims(), SECRET, algorithm="HS256")) == "unsupported_algorithm"
    assert reason(v, jwt.encode(claims(), SECRET, algorithm="HS512")) == "unsupported_algorithm"
    assert reason(v, jwt.encode(claims(), rsa_a.private, algorithm="PS256")) == "unsupported_algorithm"


def test_no_key_configured() -> None:
    v = Verifier(settings())
    assert not v.has_keys
    assert reason(v, jwt.encode(claims(), SECRET, algorithm="HS256")) == "no_verification_key"


GARBAGE = [
    "", "x", "a.b", "a.b.c", "...", "eyJ.eyJ.", "Bearer abc", "null", "{}", "\x00\x01\x02",
    f"{b64(b'not json')}.{b64(claims())}.sig",
    f"{b64([1, 2])}.{b64(claims())}.sig",
    f"{b64({'alg': 'HS256'})}.{b64(b'not json')}.",
    f"{b64({'alg': 'HS256'})}.{b64([1])}.",
    f"{b64({'alg': 5})}.{b64(claims())}.",
    f"{b64({'alg': 'HS256', 'kid': 7})}.{b64(claims())}.",
    f"{b64({'alg': 'RS256'})}.{b64(claims())}.!!!not-base64!!!",
    "a" * (MAX_TOKEN_CHARS + 1),
]


@pytest.mark.parametrize("token", GARBAGE)
def test_garbage_is_malformed_or_unsupported(hs, token) -> None:
    assert reason(hs, token) in {"malformed_token", "unsupported_algorithm", "bad_signature"}


@pytest.mark.parametrize("token", [None, 12, b"abc"])
def test_non_string_token(hs, token) -> None:
    assert reason(hs, token) == "malformed_token"


def test_garbage_claims_values(hs) -> None:
    for bad in ({"exp": "soon"}, {"exp": float("nan")}, {"exp": float("inf")}, {"nbf": "x"}, {"iat": [1]},
                {"sub": 42}):
        token = jwt.encode({**claims(), **bad}, SECRET, algorithm="HS256")
        assert reason(hs, token) in {"malformed_token", "token_expired"}


def test_truncated_es256_signature(tmp_path, ec_key) -> None:
    p = tmp_path / "ec.pem"
    p.write_bytes(ec_key.public_pem)
    v = Verifier(settings(jwt_public_key_file=str(p)))
    good = jwt.encode(claims(), ec_key.private, algorithm="ES256")
    for i in range(0, len(good), 7):
        with pytest.raises(AuthError):
            v.verify(good[:i])


@hsettings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}"))
def test_fuzz_only_auth_error(token: str) -> None:
    v = Verifier(settings(jwt_secret=SECRET))
    with pytest.raises(AuthError):
        v.verify(token)


# --- configuration errors ---------------------------------------------------------------------

def test_config_errors(tmp_path, rsa_a) -> None:
    with pytest.raises(AuthConfigError):
        Verifier(settings(jwt_secret=SECRET, jwt_algorithms=("HS256", "none")))
    with pytest.raises(AuthConfigError):
        Verifier(settings(jwt_public_key_file=str(tmp_path / "missing.pem")))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(AuthConfigError):
        Verifier(settings(jwt_public_key_file=str(bad)))
    with pytest.raises(AuthConfigError):  # RSA key, but only ES256 allowed
        p = tmp_path / "rsa.pem"
        p.write_bytes(rsa_a.public_pem)
        Verifier(settings(jwt_public_key_file=str(p), jwt_algorithms=("ES256",)))
    for doc in ("not json", "[]", '{"keys": 1}', '{"keys": []}', '{"keys": [{"kty": "nope"}]}',
                json.dumps({"keys": [{**rsa_a.jwk, "use": "enc"}]}),
                json.dumps({"keys": [rsa_a.jwk, rsa_a.jwk]})):
        p = tmp_path / "jwks.json"
        p.write_text(doc)
        with pytest.raises(AuthConfigError):
            Verifier(settings(jwks_file=str(p)))


def test_jwks_alg_field_restricts_key(tmp_path, rsa_a) -> None:
    p = tmp_path / "jwks.json"
    p.write_text(json.dumps({"keys": [{**rsa_a.jwk, "alg": "RS512"}]}))
    v = Verifier(settings(jwks_file=str(p), jwt_algorithms=("RS256", "RS512")))
    assert v.verify(jwt.encode(claims(), rsa_a.private, algorithm="RS512", headers={"kid": "key-a"}))
    assert reason(v, jwt.encode(claims(), rsa_a.private, algorithm="RS256", headers={"kid": "key-a"})) \
        == "unsupported_algorithm"


def test_pem_certificate_accepted(tmp_path, rsa_a) -> None:
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(rsa_a.private.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(rsa_a.private, hashes.SHA256()))
    p = tmp_path / "cert.pem"
    p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    v = Verifier(settings(jwt_public_key_file=str(p)))
    assert v.verify(jwt.encode(claims(), rsa_a.private, algorithm="RS256"))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("bad", ["4102444800", 1e300, True, -1, 10**20], ids=["numeric-string", "1e300", "bool", "negative", "huge-int"])
def test_time_claims_are_bounded_numbers(hs, claim, bad) -> None:
    now = int(time.time())
    body = {**claims(), claim: bad}
    if claim != "exp":
        body["exp"] = now + 600
    token = jwt.encode(body, SECRET, algorithm="HS256")
    assert reason(hs, token) in {"malformed_token", "token_expired", "token_not_yet_valid"}
    if claim == "exp" and bad in ("4102444800", 1e300, 10**20):
        assert reason(hs, token) == "malformed_token"  # accepted before: valid until 2100 / forever


def test_time_claims_in_range_still_accepted(hs) -> None:
    now = int(time.time())
    assert hs.verify(jwt.encode({**claims(), "exp": now + 60.5, "iat": float(now), "nbf": now - 1}, SECRET,
                                algorithm="HS256"))
