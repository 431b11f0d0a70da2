"""Helpers for the auth tests: key pairs (made with `cryptography`), claims, settings."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from kdc_trio.config import Settings

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


@dataclass(frozen=True)
class KeyPair:
    private: Any
    public_pem: bytes
    jwk: dict


def make_pair(private, kid: str | None, alg: str) -> KeyPair:
    public = private.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    algo = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    jwk = json.loads(algo.to_jwk(public))
    if kid is not None:
        jwk["kid"] = kid
    jwk["use"] = "sig"
    return KeyPair(private, pem, jwk)


def claims(sub: str = "user-1", ttl: float = 600, **more: Any) -> dict:
    now = int(time.time())
    out = {"sub": sub, "iat": now, "exp": now + int(ttl)}
    out.update(more)
    return out


def settings(**kw: Any) -> Settings:
    return Settings.from_env({}, **kw)
