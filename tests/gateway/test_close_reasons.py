"""Why an outbox closed is a CloseReason (an Enum), never a string prefix to match."""

from __future__ import annotations

import trio

from kdc_trio.relay.message import RelayMessage
from kdc_trio.relay.outbox import Closed, CloseReason, Outbox


def _msg(seq: int) -> RelayMessage:
    return RelayMessage(session_id="s", event="chat_delta", data={"seq": seq}, seq=seq, timestamp=0.0)


def test_full_outbox_closes_with_outbox_full_and_its_detail():
    ob = Outbox("c", 2)
    for i in range(1, 4):
        ob.offer(_msg(i))
    assert ob.closed_reason == Closed(CloseReason.OUTBOX_FULL, "more than 2 events waiting (SSE_CLIENT_QUEUE)")
    # how logs, the SSE closing comment and Socket.IO close reason name it: unchanged text
    assert str(ob.closed_reason) == "outbox_full: more than 2 events waiting (SSE_CLIENT_QUEUE)"
    assert ob.statistics()["closed_reason"] == str(ob.closed_reason)


def test_first_close_wins():
    ob = Outbox("c", 2)
    ob.close(CloseReason.SERVER_SHUTDOWN)
    ob.close(CloseReason.CLIENT_GONE, "late")
    assert ob.closed_reason == Closed(CloseReason.SERVER_SHUTDOWN)
    assert str(ob.closed_reason) == "server_shutdown"


def test_reason_properties_table():
    slow = {r for r in CloseReason if r.slow}
    unwritable = {r for r in CloseReason if not r.writable}
    assert slow == {CloseReason.WRITE_DEADLINE, CloseReason.OUTBOX_FULL, CloseReason.RELAY_OVERFLOW,
                    CloseReason.RELAY_FAILED}
    assert unwritable == {CloseReason.CLIENT_GONE, CloseReason.WRITE_DEADLINE, CloseReason.OUTBOX_FULL}


async def test_close_wakes_a_waiting_writer():
    ob = Outbox("c", 2)
    got: list = []

    async def writer() -> None:
        got.append(await ob.take())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        ob.close(CloseReason.RELAY_FAILED, "bus gone")
    assert got == [[]] and str(ob.closed_reason) == "relay_failed: bus gone"
