"""`redis+cluster://` URLs (kdc_trio/redis/url.py): seeds, credentials, TLS, refusals."""

from __future__ import annotations

import pytest

from kdc_trio.redis.url import ClusterURL, RedisURL, is_cluster_url, parse_cluster_url


def test_seeds_and_credentials() -> None:
    u = parse_cluster_url("redis+cluster://app:s%3Acret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
    assert u.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert (u.username, u.password, u.ssl) == ("app", "s:cret", False)
    assert u.node("10.0.0.9", 7005) == RedisURL(host="10.0.0.9", port=7005, username="app", password="s:cret")
    assert "s:cret" not in repr(u) and "s:cret" not in repr(u.node("h", 1))


def test_defaults_query_and_tls() -> None:
    assert parse_cluster_url("redis+cluster://h1") == ClusterURL(seeds=(("h1", 6379),))
    u = parse_cluster_url("rediss+cluster://h1:7000,h2:7000/0?password=p&username=u")
    assert u == ClusterURL(seeds=(("h1", 7000), ("h2", 7000)), username="u", password="p", ssl=True)
    assert parse_cluster_url("redis+cluster://:pw@h:1/").password == "pw"
    assert parse_cluster_url("redis+cluster://h:1?password=a/b").password == "a/b"


@pytest.mark.parametrize("bad", ["redis://h:1", "redis+cluster://", "redis+cluster://h:1/2", "redis+cluster://h:x",
                                 "redis+cluster://h:70000", "redis+cluster://[::1:7000", "cluster://h:1"])
def test_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_cluster_url(bad)


def test_is_cluster_url() -> None:
    assert is_cluster_url("redis+cluster://h:1") and is_cluster_url("REDISS+CLUSTER://h:1")
    assert not is_cluster_url("redis://h:1") and not is_cluster_url("unix:///tmp/r.sock")


@pytest.mark.parametrize("prefix", ["", "kdc{x}", "{kdc}", "a}b"])
def test_a_key_prefix_with_a_hash_tag_is_refused_at_start(prefix):
    """Braces in KDC_REDIS_PREFIX would make the prefix every key's hash tag under Cluster (one slot)."""
    from kdc_trio.config import Settings

    with pytest.raises(ValueError, match="KDC_REDIS_PREFIX"):
        Settings.from_env({"KDC_REDIS_PREFIX": prefix})
