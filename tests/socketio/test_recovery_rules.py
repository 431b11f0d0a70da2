"""Who gets Socket.IO recovery (pid + offsets), where a resume starts, and what a pid may resume."""

from __future__ import annotations

import pytest

from kdc_trio.sessions.store import MemorySessionStore, RecoveryRecord
from kdc_trio.transports.sio_recovery import recovered, resume_after, speaks_recovery

NODE = {"user-agent": ""}
PY = {"user-agent": "Python/3.11 aiohttp/3.9.5"}


@pytest.mark.parametrize("mode,auth,headers,want", [
    ("auto", {}, NODE, True),
    ("auto", {}, PY, False),
    ("auto", {}, {}, True),
    ("auto", {"recovery": True}, PY, True),
    ("auto", {"recovery": False}, NODE, False),
    ("auto", {"pid": "p"}, PY, True),  # a client that sends a pid speaks it
    ("off", {}, NODE, False),
    ("on", {}, PY, True),
    ("off", {"recovery": "yes"}, NODE, False),  # only a boolean decides
])
def test_who_speaks_recovery(mode, auth, headers, want):
    assert speaks_recovery(mode, auth, headers) is want


REC = RecoveryRecord("s1", "bob", "stream-1", 40)


@pytest.mark.parametrize("auth,record,want", [
    ({"last_event_id": 7, "offset": "9"}, REC, 7),  # python-socketio / SSE ids first
    ({"last_event_id": "7"}, None, 7),
    ({"offset": "9"}, REC, 9),
    ({}, REC, 40),  # recovered, no event seen: from where the pid was issued
    ({}, None, None),
    ({"offset": "x9"}, None, None),
    ({"offset": -1}, None, None),
    ({"offset": True}, None, None),
    ({"offset": "9" * 30}, None, None),
    # str.isdigit() holds for '²' and '٣' but int() refuses '²' (was a ValueError: CONNECT_ERROR
    # server_error and a logged traceback); neither is a seq we gave
    ({"offset": "\u00b2"}, None, None),
    ({"last_event_id": "\u0663", "offset": "4"}, None, 4),
])
def test_where_a_resume_starts(auth, record, want):
    assert resume_after(auth, record) == want


def test_a_pid_resumes_only_its_session_and_user():
    assert recovered(REC, "s1", "bob")
    assert not recovered(REC, "s1", "eve")
    assert not recovered(REC, "s2", "bob")
    assert not recovered(None, "s1", "bob")


async def test_memory_store_keeps_pids_bounded_and_expiring():
    store = MemorySessionStore(max_sessions=2)
    for i in range(3):
        await store.put_recovery(f"p{i}", REC, 60)
    assert await store.recovery("p0") is None and await store.recovery("p2") == REC
    await store.put_recovery("short", REC, -1)
    assert await store.recovery("short") is None
