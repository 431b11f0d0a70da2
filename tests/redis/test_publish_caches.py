"""What a publishing process caches per session for the PUBLISH script (relay/redis_bus.py): the
script's KEYS and each (session, event, target)'s head text. Both are right for every session
(under Redis Cluster: in the slot of the session's channel) and both are bounded by HEAD_CACHE."""

from __future__ import annotations

import pytest

from kdc_trio.redis.slots import key_slot
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.redis_bus import HEAD_CACHE, RedisBus


class _Service:
    """The pub/sub plumbing's part a bus touches when it is made (no Redis needed here)."""

    host_id = "h1"

    def on_reconnect_call(self, fn) -> None:
        pass

    def on_gap_call(self, fn) -> None:
        pass


@pytest.mark.parametrize("cluster", [False, True])
def test_script_keys_are_the_sessions_own_and_cached(cluster):
    bus = RedisBus(None, _Service(), channel_prefix="kdc:chat", key_prefix="kdc", cluster=cluster)
    a, b = SessionKey("home", "demo", "s-a"), SessionKey("home", "demo", "s-b")
    keys_a = bus.script_keys(a)
    assert keys_a is bus.script_keys(SessionKey("home", "demo", "s-a")), "an equal key finds the cached KEYS"
    assert keys_a != bus.script_keys(b)
    channel = bus._channel(a)
    assert keys_a[:2] == (f"kdc:seq:{{{channel}}}", f"kdc:log:{{{channel}}}")
    if cluster:  # one script call reaches one slot: the channel's
        assert {key_slot(k) for k in keys_a} == {key_slot(channel)}
    else:
        assert keys_a[2:] == ("kdc:logbytes", "kdc:logtouched", "kdc:logbytes:total")
    assert isinstance(keys_a, tuple), "shared by every call of the session: nobody may change it"


def test_the_caches_start_over_past_their_bound():
    bus = RedisBus(None, _Service(), channel_prefix="kdc:chat", key_prefix="kdc")
    first = SessionKey("home", "demo", "s0")
    keys = bus.script_keys(first)
    for i in range(1, HEAD_CACHE + 10):
        key = SessionKey("home", "demo", f"s{i}")
        bus.script_keys(key)
        bus.event_head(key, "chat_delta", None)
        assert len(bus._script_keys) <= HEAD_CACHE and len(bus._heads) <= HEAD_CACHE
    assert bus.script_keys(first) == keys, "built again after a start-over: the same KEYS"
