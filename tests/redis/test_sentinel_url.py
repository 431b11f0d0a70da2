"""`redis+sentinel://` URLs: what each part means, and every malformed form refused with a reason."""

from __future__ import annotations

import pytest

from kdc_trio.redis.sentinel import DirectConnector, SentinelConnector, connector_for
from kdc_trio.redis.url import FAILOVER_HOLD_S, SENTINEL_PORT, SENTINEL_TIMEOUT_S, is_sentinel_url, parse_sentinel_url


def test_hosts_master_db_and_defaults():
    u = parse_sentinel_url("redis+sentinel://s1:26380,s2,[::1]:26381/mymaster/2")
    assert u.sentinels == (("s1", 26380), ("s2", SENTINEL_PORT), ("::1", 26381))
    assert (u.master, u.db, u.ssl, u.sentinel_timeout) == ("mymaster", 2, False, SENTINEL_TIMEOUT_S)
    assert u.failover_hold == FAILOVER_HOLD_S
    assert u.username is u.password is u.sentinel_username is u.sentinel_password is None
    assert parse_sentinel_url("redis+sentinel://s/m/").db == 0, "a trailing slash is no database"


def test_credentials_options_and_tls():
    u = parse_sentinel_url("rediss+sentinel://app:p%40ss@s1:1,s2:2/m?db=5&sentinel_password=s3cr3t"
                           "&sentinel_username=su&sentinel_timeout=0.25&failover_hold=2")
    assert (u.username, u.password) == ("app", "p@ss"), "the userinfo is the master's"
    assert (u.sentinel_username, u.sentinel_password) == ("su", "s3cr3t")
    assert (u.db, u.sentinel_timeout, u.failover_hold, u.ssl) == (5, 0.25, 2.0, True)
    master, sentinel = u.master_url("10.0.0.9", 6380), u.sentinel_url("s1", 1)
    assert (master.host, master.port, master.db, master.password, master.ssl) == ("10.0.0.9", 6380, 5, "p@ss", True)
    assert (sentinel.db, sentinel.username, sentinel.password, sentinel.ssl) == (0, "su", "s3cr3t", True)
    assert "p@ss" not in repr(u) and "s3cr3t" not in repr(u)
    q = parse_sentinel_url("redis+sentinel://s/m?password=pw&username=u")
    assert (q.username, q.password) == ("u", "pw"), "as redis-py: the query names credentials too"
    assert parse_sentinel_url("redis+sentinel://:pw@s/m").password == "pw"


@pytest.mark.parametrize("url, reason", [
    ("redis://s/m", "redis\\+sentinel://"),
    ("redis+sentinel://s", "/mastername"),
    ("redis+sentinel://s/", "/mastername"),
    ("redis+sentinel:///m", "at least one Sentinel"),
    ("redis+sentinel://s1,,s2/m", "host:port"),
    ("redis+sentinel://s:0/m", "host:port"),
    ("redis+sentinel://s:70000/m", "host:port"),
    ("redis+sentinel://s:x/m", "host:port"),
    ("redis+sentinel://s:/m", "host:port"),
    ("redis+sentinel://::1/m", "IPv6"),
    ("redis+sentinel://[::1/m", "ipv6"),
    ("redis+sentinel://[::1]x/m", "ipv6"),
    ("redis+sentinel://s/m/1/2", "/mastername/db"),
    ("redis+sentinel://s//1", "/mastername"),
    ("redis+sentinel://s/m/x", "database"),
    ("redis+sentinel://s/m?db=-1", "database"),
    ("redis+sentinel://s/m?sentinel_pasword=x", "unknown Sentinel URL option 'sentinel_pasword'"),
    ("redis+sentinel://s/m?sentinel_timeout=0", "above 0"),
    ("redis+sentinel://s/m?sentinel_timeout=soon", "seconds"),
    ("redis+sentinel://s/m?failover_hold=-5", "above 0"),
])
def test_malformed_urls_are_refused_with_the_reason(url, reason):
    with pytest.raises(ValueError, match=reason):
        parse_sentinel_url(url)


def test_the_scheme_picks_the_connector():
    assert is_sentinel_url("REDIS+SENTINEL://s/m") and is_sentinel_url("rediss+sentinel://s/m")
    assert not is_sentinel_url("redis://h:6379/0")
    assert isinstance(connector_for("redis+sentinel://s/m"), SentinelConnector)
    assert isinstance(connector_for("redis://h:6379/0"), DirectConnector)
    with pytest.raises(ValueError):
        connector_for("redis+sentinel://s")


def test_the_compat_backend_refuses_a_sentinel_url_with_the_reason():
    from kdc_trio.gateway_redis import _clients
    from tests.support.gateway import test_settings

    with pytest.raises(ValueError, match="KDC_REDIS_BACKEND=native"):
        _clients(test_settings(redis_url="redis+sentinel://s/m", redis_backend="compat"))
    client, read_client, pubsub, watch = _clients(test_settings(redis_url="redis+sentinel://s1,s2:26380/m/1"))
    assert isinstance(client.connector, SentinelConnector) and watch is not None
    assert read_client.connector is client.connector is pubsub(on_batch=print).connector, "one connector a process"
    assert _clients(test_settings(redis_url="redis://h:6379/0"))[3] is None, "no watch without Sentinel"


async def test_the_watch_takes_a_reads_failover_events_aborts_then_promotions_then_switches():
    """A pub/sub batch keeps each channel's order, not the order across channels: the watch
    takes aborts, then promotions, then switches. A read telling an abort and a promotion ends
    holding (bounded by failover_hold): a failover may be under way, and writes to a master
    being replaced are what would be lost. A switch is the last word."""
    from kdc_trio.redis.sentinel import SentinelConnector
    from kdc_trio.redis.sentinel_watch import ABORTED, PROMOTING, SWITCH, SentinelWatch

    connector = SentinelConnector(parse_sentinel_url("redis+sentinel://s1/mymaster"))
    connector.master = ("10.0.0.1", 6379)
    watch = SentinelWatch(connector)
    promoting = b"slave 10.0.0.2:6379 10.0.0.2 6379 @ mymaster 10.0.0.1 6379"
    aborted = b"master mymaster 10.0.0.1 6379"
    # promoting (failover 1), aborted (failover 1), promoting (failover 2): one read, grouped per channel
    watch._on_batch({PROMOTING.encode(): [promoting, promoting], ABORTED.encode(): [aborted]})
    assert connector._hold_until > 0, "held: the second failover may be under way"
    watch._on_batch({SWITCH.encode(): [b"mymaster 10.0.0.1 6379 10.0.0.2 6379"], PROMOTING.encode(): [promoting]})
    assert connector._hold_until == 0 and connector.master == ("10.0.0.2", 6379), "the switch is taken last"
    watch._on_batch({ABORTED.encode(): [b"master othermaster 10.0.0.9 6379"]})  # another master's: ignored
    assert connector.master == ("10.0.0.2", 6379) and watch.switches == 1
