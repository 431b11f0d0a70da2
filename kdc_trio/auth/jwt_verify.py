"""JWT verification with pyjwt: one `Verifier` per process, keys loaded once at construction.

Keys and the algorithms each may verify — chosen by the key's *type*, never by the token:

- `settings.jwt_secret` → the HMAC key; only HS256/HS384/HS512.
- `settings.jwt_public_key_file` (PEM public key or certificate) → RSA: RS*/PS*; EC: the ES*
  of its curve; Ed25519/Ed448: EdDSA.
- `settings.jwks_file` (a JWKS document) → one key per entry, selected by the token's `kid`.
  An entry with `alg` allows that algorithm only; entries with `use` other than `sig` are
  skipped; an `oct` entry is an HMAC key.

All of it is intersected with `settings.jwt_algorithms`. This is what defeats algorithm
confusion: an HS256 token is only ever checked against HMAC secrets, so an RSA public key can
never serve as an HMAC secret; `alg: none` is never accepted.

Key selection for asymmetric algorithms: a token with a `kid` must name a JWKS entry when a
JWKS is configured (else `unknown_kid`); without a JWKS the PEM key is used. A token without a
`kid` uses the PEM key when there is one, else the JWKS's key if it holds exactly one usable key
for that algorithm, else `unknown_kid`.

Claims: `exp` is required (a token that never expires is refused); `exp`, `nbf`, `iat` are
checked with `settings.jwt_leeway_s`, and must be JSON numbers no later than year 9999 (a
numeric string or `1e300` is `malformed_token`); `iss` and `aud` only when configured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from kdc_trio.auth.errors import (
    BAD_AUDIENCE, BAD_ISSUER, BAD_SIGNATURE, INVALID_TOKEN, MALFORMED_TOKEN, MISSING_CLAIM,
    NO_VERIFICATION_KEY, TOKEN_EXPIRED, TOKEN_NOT_YET_VALID, UNKNOWN_KID, UNSUPPORTED_ALGORITHM,
    AuthConfigError, AuthError,
)
from kdc_trio.config import Settings

__all__ = ["AuthError", "AuthConfigError", "Verifier", "VerificationKey"]

# Real-world JWTs are 1–4 KiB; an 8 KiB header limit at most proxies caps them anyway. Anything
# longer is refused before base64/JSON decoding so a hostile token costs nothing.
MAX_TOKEN_CHARS = 16 * 1024

# A key file is a few KiB; a JWKS of an IdP a few dozen keys. Refuse absurd files at startup.
MAX_KEY_FILE_BYTES = 1024 * 1024

# A token without `exp` would be valid forever.
REQUIRED_CLAIMS = ("exp",)
# The time claims must be JSON numbers (RFC 7519 NumericDate), never strings, booleans or
# non-finite values, and no later than 9999-12-31T23:59:59Z: pyjwt alone accepts "1700000000"
# and 1e300, so a token could claim to be valid for longer than any clock can count.
TIME_CLAIMS = ("exp", "nbf", "iat")
MAX_NUMERIC_DATE = 253402300799

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}
OKP_ALGORITHMS = frozenset({"EdDSA"})


@dataclass(frozen=True)
class VerificationKey:
    key: Any  # bytes (HMAC) or a cryptography public key object
    algorithms: frozenset[str]
    kid: str | None = None
    origin: str = ""  # "secret", "pem", "jwks" — for logs and errors


def _algorithms_for(key: Any) -> frozenset[str]:
    if isinstance(key, (bytes, bytearray)):
        return HMAC_ALGORITHMS
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = EC_ALGORITHMS_BY_CURVE.get(key.curve.name)
        return frozenset({alg}) if alg else frozenset()
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return OKP_ALGORITHMS
    return frozenset()


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise AuthConfigError(f"{what} {path!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise AuthConfigError(f"{what} {path!r} is larger than {MAX_KEY_FILE_BYTES} bytes")
    return data


def load_pem_key(path: str, allowed: frozenset[str]) -> VerificationKey:
    data = _read_file(path, "KDC_JWT_PUBLIC_KEY_FILE")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except ValueError as exc:
        raise AuthConfigError(f"KDC_JWT_PUBLIC_KEY_FILE {path!r}: not a PEM public key ({exc})") from None
    algs = _algorithms_for(key) & allowed
    if not algs:
        raise AuthConfigError(
            f"KDC_JWT_PUBLIC_KEY_FILE {path!r}: a {type(key).__name__} verifies none of "
            f"KDC_JWT_ALGORITHMS={','.join(sorted(allowed))}")
    return VerificationKey(key=key, algorithms=algs, origin="pem")


def load_jwks(path: str, allowed: frozenset[str]) -> list[VerificationKey]:
    data = _read_file(path, "KDC_JWKS_FILE")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"KDC_JWKS_FILE {path!r}: not JSON ({exc})") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise AuthConfigError(f"KDC_JWKS_FILE {path!r}: expected an object with a `keys` array")
    keys: list[VerificationKey] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue  # unsupported kty/crv/alg: unusable, like pyjwt's own PyJWKSet
        key = jwk.key
        by_type = _algorithms_for(key if not isinstance(key, str) else key.encode())
        if isinstance(entry.get("alg"), str):
            by_type &= {entry["alg"]}
        algs = by_type & allowed
        if algs:
            keys.append(VerificationKey(key=key, algorithms=algs, kid=kid, origin="jwks"))
    if not keys:
        raise AuthConfigError(f"KDC_JWKS_FILE {path!r}: no usable signing key for "
                              f"KDC_JWT_ALGORITHMS={','.join(sorted(allowed))}")
    kids = [k.kid for k in keys if k.kid is not None]
    if len(kids) != len(set(kids)):
        raise AuthConfigError(f"KDC_JWKS_FILE {path!r}: duplicate `kid`")
    return keys


# `sub`/`jti` of the wrong type (pyjwt >= 2.10 checks them; pyproject allows >= 2.8).
_CLAIM_TYPE_ERRORS = tuple(
    getattr(jwt.exceptions, name) for name in ("InvalidSubjectError", "InvalidJTIError")
    if hasattr(jwt.exceptions, name))

# pyjwt exception → our reason. Order matters: subclasses before their bases.
_REASONS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str], ...] = (
    (_CLAIM_TYPE_ERRORS, MALFORMED_TOKEN),
    (jwt.ExpiredSignatureError, TOKEN_EXPIRED),
    (jwt.ImmatureSignatureError, TOKEN_NOT_YET_VALID),
    (jwt.InvalidIssuerError, BAD_ISSUER),
    (jwt.InvalidAudienceError, BAD_AUDIENCE),
    (jwt.InvalidSignatureError, BAD_SIGNATURE),
    (jwt.MissingRequiredClaimError, MISSING_CLAIM),
    (jwt.InvalidAlgorithmError, UNSUPPORTED_ALGORITHM),
    (jwt.InvalidIssuedAtError, MALFORMED_TOKEN),
    (jwt.DecodeError, MALFORMED_TOKEN),
    (jwt.InvalidKeyError, UNSUPPORTED_ALGORITHM),
    (jwt.InvalidTokenError, INVALID_TOKEN),
)


def _reason_for(exc: Exception) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        # A configured `iss`/`aud` that the token lacks is as wrong as a different one.
        return {"iss": BAD_ISSUER, "aud": BAD_AUDIENCE}.get(exc.claim, MISSING_CLAIM)
    for cls, reason in _REASONS:
        if isinstance(exc, cls):
            return reason
    return INVALID_TOKEN


class Verifier:
    """Verifies JWTs against the configured keys; `verify(token) -> claims` or `AuthError`."""

    def __init__(self, settings: Settings) -> None:
        allowed = frozenset(settings.jwt_algorithms)
        if any(a.lower() == "none" for a in allowed):
            raise AuthConfigError("KDC_JWT_ALGORITHMS must never contain `none`")
        self._allowed = allowed
        self._settings = settings
        self._leeway = settings.jwt_leeway_s
        self._secret: VerificationKey | None = None
        self._pem: VerificationKey | None = None
        self._jwks: list[VerificationKey] = []
        if settings.jwt_secret:
            algs = HMAC_ALGORITHMS & allowed
            if algs:
                self._secret = VerificationKey(key=settings.jwt_secret.encode(), algorithms=algs, origin="secret")
        if settings.jwt_public_key_file:
            self._pem = load_pem_key(settings.jwt_public_key_file, allowed)
        if settings.jwks_file:
            self._jwks = load_jwks(settings.jwks_file, allowed)
        self._jwks_by_kid = {k.kid: k for k in self._jwks if k.kid is not None}

    @property
    def has_keys(self) -> bool:
        return bool(self._secret or self._pem or self._jwks)

    def _select_key(self, alg: str, kid: str | None) -> VerificationKey:
        if alg in HMAC_ALGORITHMS:
            if kid is not None and kid in self._jwks_by_kid and alg in self._jwks_by_kid[kid].algorithms:
                return self._jwks_by_kid[kid]
            if self._secret is not None and alg in self._secret.algorithms:
                return self._secret
            raise AuthError(NO_VERIFICATION_KEY, f"no HMAC key for {alg}")
        if kid is not None and self._jwks:
            key = self._jwks_by_kid.get(kid)
            if key is None:
                raise AuthError(UNKNOWN_KID, "the token's kid is not in the JWKS")
        elif self._pem is not None:
            key = self._pem
        else:
            usable = [k for k in self._jwks if alg in k.algorithms]
            if not self._jwks:
                raise AuthError(NO_VERIFICATION_KEY, f"no public key for {alg}")
            if len(usable) != 1:
                raise AuthError(UNKNOWN_KID, "the token has no kid and the JWKS has several keys")
            key = usable[0]
        if alg not in key.algorithms:
            raise AuthError(UNSUPPORTED_ALGORITHM, f"{alg} does not match the {key.origin} key's type")
        return key

    def verify(self, token: str) -> dict[str, Any]:
        """Verify signature and claims; return the claims. Raises `AuthError` only."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthError(MALFORMED_TOKEN, "empty, oversized or not a string")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(MALFORMED_TOKEN, "undecodable header") from None
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or alg.lower() == "none" or alg not in self._allowed:
            raise AuthError(UNSUPPORTED_ALGORITHM, "algorithm not accepted")
        if kid is not None and not isinstance(kid, str):
            raise AuthError(MALFORMED_TOKEN, "kid is not a string")
        if not self.has_keys:
            raise AuthError(NO_VERIFICATION_KEY, "no key is configured")
        key = self._select_key(alg, kid)
        s = self._settings
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                leeway=self._leeway,
                issuer=s.jwt_issuer,
                audience=s.jwt_audience,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_aud": s.jwt_audience is not None,
                    "verify_iss": s.jwt_issuer is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthError(_reason_for(exc), type(exc).__name__) from None
        except (ValueError, TypeError, OverflowError) as exc:
            # cryptography on a wrong-length ES signature, absurd numbers in claims: the token's fault.
            raise AuthError(MALFORMED_TOKEN, type(exc).__name__) from None
        if not isinstance(claims, dict):
            raise AuthError(MALFORMED_TOKEN, "claims are not an object")
        check_time_claims(claims)
        return claims


def check_time_claims(claims: dict[str, Any]) -> None:
    """`exp`/`nbf`/`iat`, where present, are finite JSON numbers in [0, MAX_NUMERIC_DATE]."""
    for name in TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AuthError(MALFORMED_TOKEN, f"`{name}` is not a number")
        if not 0 <= value <= MAX_NUMERIC_DATE:  # also false for NaN
            raise AuthError(MALFORMED_TOKEN, f"`{name}` is outside 0..{MAX_NUMERIC_DATE}")
