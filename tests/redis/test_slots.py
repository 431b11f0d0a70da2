"""Slot arithmetic and topology parsing (kdc_trio/redis/slots.py): pure, no server.

Known values come from the Redis Cluster specification and `CLUSTER KEYSLOT` on Redis 7.0.15
(the real-cluster tests in test_cluster_client.py check `key_slot` against the server too)."""

from __future__ import annotations

import pytest

from kdc_trio.redis.slots import (SLOTS, Redirect, Shard, SlotMap, claimed_slots, crc16, hash_tag, key_slot,
                                  merge_views, parse_cluster_shards, parse_cluster_slots, parse_redirect)


def test_crc16_xmodem_check_value() -> None:
    assert crc16(b"123456789") == 0x31C3  # the spec's reference output
    assert crc16(b"") == 0


@pytest.mark.parametrize("key,slot", [
    ("foo", 12182), ("bar", 5061), ("hello", 866), ("", 0), ("a", 15495),
    ("{user1000}.following", 3443), ("user1000", 3443),
    ("foo{}{bar}", 8363),            # first "{" + first "}" is empty → the whole key
    ("foo{{bar}}zap", key_slot("{bar")),  # the tag is "{bar"
    ("foo{bar}{zap}", key_slot("bar")),   # only the first tag counts
    ("{}", key_slot("{}")), ("}{", key_slot("}{")), ("{a", key_slot("{a")),
])
def test_key_slot_known_values(key: str, slot: int) -> None:
    assert key_slot(key) == slot


def test_hash_tag_rules() -> None:
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert hash_tag("{user1000}.following") == b"user1000"
    assert hash_tag("foo{}{bar}") == b"foo{}{bar}"
    assert hash_tag("foo{{bar}}zap") == b"{bar"
    assert hash_tag("no tag") == b"no tag"
    assert key_slot(b"foo") == key_slot("foo") == key_slot(bytearray(b"foo"))
    assert key_slot("ü") == key_slot("ü".encode())
    assert key_slot(42) == key_slot("42")
    with pytest.raises(TypeError):
        key_slot(None)  # type: ignore[arg-type]


def _shards_reply() -> list:
    def node(port: int, role: str, health: str = "online", endpoint: bytes = b"127.0.0.1") -> list:
        return [b"id", b"x" * 40, b"port", port, b"ip", b"127.0.0.1", b"endpoint", endpoint,
                b"role", role.encode(), b"replication-offset", 0, b"health", health.encode()]
    return [
        [b"slots", [0, 5460], b"nodes", [node(7000, "master"), node(7003, "replica")]],
        [b"slots", [5461, 10922], b"nodes", [node(7001, "master", "fail"), node(7004, "master", endpoint=b"?")]],
        [b"slots", [10923, 12000, 12002, 16383], b"nodes", [node(7002, "master"), node(7005, "replica", "loading")]],
        [b"slots", [], b"nodes", [node(7006, "master")]],  # a master without slots owns nothing
    ]


def test_parse_cluster_shards() -> None:
    m = parse_cluster_shards(_shards_reply(), default_host="10.0.0.9")
    assert m.owner(0) == m.owner(5460) == ("127.0.0.1", 7000)
    assert m.shard(0) == Shard(("127.0.0.1", 7000), (("127.0.0.1", 7003),))
    assert m.owner(5461) == ("10.0.0.9", 7004)  # the failed old master is ignored; "?" → default host
    assert m.owner(12001) is None and m.covered == SLOTS - 1
    assert m.shard(16383) == Shard(("127.0.0.1", 7002))  # a loading replica is not offered
    assert m.masters == (("127.0.0.1", 7000), ("10.0.0.9", 7004), ("127.0.0.1", 7002))


def test_a_tls_client_takes_the_tls_port_of_a_node_that_reports_both() -> None:
    node = [b"id", b"x" * 40, b"port", 7000, b"tls-port", 17000, b"ip", b"10.0.0.1", b"role", b"master",
            b"health", b"online"]
    reply = [[b"slots", [0, 16383], b"nodes", [node]]]
    assert parse_cluster_shards(reply).owner(0) == ("10.0.0.1", 7000)
    assert parse_cluster_shards(reply, tls=True).owner(0) == ("10.0.0.1", 17000)
    tls_only = [[b"slots", [0, 16383], b"nodes", [[*node[:2], b"port", 0, *node[4:]]]]]
    assert parse_cluster_shards(tls_only).owner(0) == ("10.0.0.1", 17000)


def test_parse_cluster_slots() -> None:
    reply = [[5461, 10922, [b"127.0.0.1", 7001, b"id1"], [b"127.0.0.1", 7004, b"id4"]],
             [0, 5460, [b"", 7000, b"id0", [b"hostname", b"a"]]],
             [10923, 16383, [b"127.0.0.1", 7002, b"id2"]]]
    m = parse_cluster_slots(reply, default_host="h")
    assert [r[:2] for r in m.ranges] == [(0, 5460), (5461, 10922), (10923, 16383)]
    assert m.owner(0) == ("h", 7000) and m.shard(6000).replicas == (("127.0.0.1", 7004),)
    assert m.covered == SLOTS


@pytest.mark.parametrize("bad", [None, b"x", [[1, 2]], [[0, 1, [b"h", 1]], [1, 2, [b"h", 2]]]])
def test_malformed_slots_replies(bad: object) -> None:
    with pytest.raises((ValueError, TypeError, IndexError)):
        parse_cluster_slots(bad)


@pytest.mark.parametrize("bad", [None, [[b"slots"]], [[b"slots", [0], b"nodes", []]],
                                 [[b"slots", [0, 20000], b"nodes", [[b"port", 1, b"role", b"master"]]]]])
def test_malformed_shards_replies(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_cluster_shards(bad)


def test_with_owner_splits_a_range() -> None:
    m = SlotMap.build([(0, 99, Shard(("a", 1))), (100, 199, Shard(("b", 2), (("c", 3),)))])
    moved = m.with_owner(50, ("b", 2))
    assert moved.owner(49) == moved.owner(51) == ("a", 1)
    assert moved.shard(50) == Shard(("b", 2), (("c", 3),))
    assert m.owner(50) == ("a", 1)  # immutable
    assert m.with_owner(50, ("a", 1)) is m
    fresh = m.with_owner(500, ("d", 4))
    assert fresh.owner(500) == ("d", 4) and fresh.owner(499) is None


@pytest.mark.parametrize("text,expected", [
    ("MOVED 3999 127.0.0.1:6381", Redirect("MOVED", 3999, ("127.0.0.1", 6381))),
    (b"ASK 3999 127.0.0.1:6381", Redirect("ASK", 3999, ("127.0.0.1", 6381))),
    ("MOVED 1 :7000", Redirect("MOVED", 1, ("dflt", 7000))),
    ("ASK 2 [::1]:7000", Redirect("ASK", 2, ("::1", 7000))),
    ("MOVED 2 ::1:7000", Redirect("MOVED", 2, ("::1", 7000))),
    ("MOVED 16384 h:1", None), ("MOVED x h:1", None), ("MOVED 1 h", None), ("MOVED 1 h:p", None),
    ("ERR unknown command", None), ("CROSSSLOT Keys in request don't hash to the same slot", None), ("", None),
])
def test_parse_redirect(text: object, expected: Redirect | None) -> None:
    assert parse_redirect(text, default_host="dflt") == expected  # type: ignore[arg-type]


def test_maps_are_canonical_so_equal_assignments_are_equal() -> None:
    a, b = Shard(("a", 1)), Shard(("b", 2))
    joined = SlotMap.build([(0, 9, a), (10, 19, a), (20, 29, b)])
    assert joined.ranges == ((0, 19, a), (20, 29, b))
    patched = SlotMap.build([(0, 9, a), (11, 29, b)]).with_owner(10, ("b", 2))
    assert patched == SlotMap.build([(0, 9, a), (10, 29, b)]), "a MOVED patch equals the reloaded map"
    with pytest.raises(ValueError):
        SlotMap.build([(0, 10, a), (10, 20, b)])


def test_merge_views_believes_each_node_about_its_own_slots() -> None:
    a, b, c = ("h", 1), ("h", 2), ("h", 3)
    before = SlotMap.build([(0, 5460, Shard(a)), (5461, 10922, Shard(b)), (10923, SLOTS - 1, Shard(c))])
    after = before.with_owner(100, b)  # slot 100 migrated from a to b
    # c has not heard of it yet; a and b have
    views = {a: after, b: after, c: before}
    assert merge_views(views) == after
    assert merge_views({c: before, b: after}) == after, "b claims slot 100 itself"
    assert merge_views({c: before}) == before, "nobody who knows better spoke"
    assert claimed_slots(views) == SLOTS and claimed_slots({c: before}) == SLOTS - 10923
    # failover: b died; its replica r claims b's slots; a stale view still names b
    r = ("h", 4)
    promoted = SlotMap.build([(0, 5460, Shard(a)), (5461, 10922, Shard(r)), (10923, SLOTS - 1, Shard(c))])
    assert merge_views({a: before, r: promoted}).owner(6000) == r
    # two claimants of one range: the one more views agree with
    rogue = SlotMap.build([(0, SLOTS - 1, Shard(c))])
    assert merge_views({a: before, b: before, c: rogue}).owner(0) == a
    assert merge_views({}) == SlotMap(())


def test_command_keys_table() -> None:
    from kdc_trio.redis.keyspec import UnknownCommand, command_keys

    assert command_keys(("EVALSHA", "sha", 2, "k1", "k2", "a1")) == ["k1", "k2"]
    assert command_keys((b"evalsha", "sha", 0, "a1")) == []
    assert command_keys(("XREADGROUP", "GROUP", "g", "c", "COUNT", 5, "BLOCK", 100, "STREAMS", "s1", "s2", ">", ">")) \
        == ["s1", "s2"]
    assert command_keys(("XGROUP", "CREATE", "stream", "g", "0", "MKSTREAM")) == ["stream"]
    assert command_keys(("MSET", "a", 1, "b", 2)) == ["a", "b"]
    assert command_keys(("DEL", "a", "b")) == ["a", "b"]
    assert command_keys(("SPUBLISH", "ch", "m")) == ["ch"]
    assert command_keys(("PING",)) == [] and command_keys(("PUBLISH", "ch", "m")) == []
    with pytest.raises(UnknownCommand):
        command_keys(("BITCOUNT", "k"))
