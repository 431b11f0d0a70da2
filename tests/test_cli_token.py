"""`kdc-trio token` mints a development token the gateway accepts, with the roles asked for."""

from __future__ import annotations

import os
import subprocess
import sys

from kdc_trio.auth.identity import identity_from_claims
from kdc_trio.auth.jwt_verify import Verifier
from kdc_trio.config import Settings
from kdc_trio.sessions.model import UserType
from tests.support.processes import ROOT

SECRET = "cli-test-secret-0123456789-0123456789"


def run_cli(*args: str, secret: str | None = SECRET) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KDC_")}
    if secret:
        env["KDC_JWT_SECRET"] = secret
    return subprocess.run([sys.executable, "-m", "kdc_trio", "token", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_minted_token_verifies_with_the_same_secret_and_carries_roles():
    out = run_cli("--sub", "alice", "--roles", "kdc:role:super-admin,ops", "--username", "Alice", "--ttl", "600")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    claims = Verifier(Settings.from_env({"KDC_JWT_SECRET": SECRET})).verify(token)
    assert claims["sub"] == "alice" and claims.get("preferred_username", claims.get("username")) == "Alice"
    assert set(claims["roles"]) == {"kdc:role:super-admin", "ops"}
    assert 590 <= claims["exp"] - claims["iat"] <= 600


def test_a_privileged_role_makes_a_privileged_user_and_no_role_a_registered_one():
    settings = Settings.from_env({"KDC_JWT_SECRET": SECRET})
    privileged = settings.privileged_roles[0]
    admin = Verifier(settings).verify(run_cli("--sub", "root", "--roles", f"{privileged},ops").stdout.strip())
    plain = Verifier(settings).verify(run_cli("--sub", "dave").stdout.strip())
    assert admin[settings.roles_claim] == [privileged, "ops"]
    assert identity_from_claims(settings, admin).user_type is UserType.PRIVILEGED
    assert plain[settings.roles_claim] == []
    assert identity_from_claims(settings, plain).user_type is UserType.REGISTERED


def test_a_token_for_another_secret_is_refused():
    token = run_cli("--sub", "bob").stdout.strip()
    try:
        Verifier(Settings.from_env({"KDC_JWT_SECRET": SECRET + "-other"})).verify(token)
    except Exception as exc:
        assert "signature" in str(exc).lower() or "invalid" in str(exc).lower()
    else:
        raise AssertionError("a token signed with another secret verified")


def test_without_a_secret_it_fails_with_a_clear_message():
    out = run_cli("--sub", "carol", secret=None)
    assert out.returncode == 2 and out.stdout == ""
    assert "KDC_JWT_SECRET" in out.stderr
