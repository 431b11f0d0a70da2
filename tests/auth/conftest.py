"""Keys generated once per test session; files only under tmp_path."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.auth.helpers import KeyPair, make_pair


@pytest.fixture(scope="session")
def rsa_a() -> KeyPair:
    return make_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "key-a", "RS256")


@pytest.fixture(scope="session")
def rsa_b() -> KeyPair:
    return make_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "key-b", "RS256")


@pytest.fixture(scope="session")
def ec_key() -> KeyPair:
    return make_pair(ec.generate_private_key(ec.SECP256R1()), "ec-1", "ES256")


@pytest.fixture
def jwks_path(tmp_path, rsa_a, rsa_b):
    p = tmp_path / "jwks.json"
    p.write_text(json.dumps({"keys": [rsa_a.jwk, rsa_b.jwk]}))
    return str(p)
