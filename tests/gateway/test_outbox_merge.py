"""Slow consumers, merge then close: the rules by which an outbox joins a slow connection's deltas."""

from __future__ import annotations

import json

import pytest

from kdc_trio.relay.merge import MergedDelta, compact
from kdc_trio.relay.message import DATA_LAST, RelayMessage, dumps
from kdc_trio.relay.outbox import Closed, CloseReason, Outbox
from protocol import envelope as E

SVC = E.ServiceCtx(request_id="r1", tenant="t", project="p", user=None, user_type="anonymous")
TURN = E.ConvCtx(session_id="s", conversation_id="c", turn_id="t1")


def _wire(seq: int, event: str, env: dict, target: str | None = None) -> RelayMessage:
    """As a Redis subscriber gets it: the data's JSON text kept, nothing decoded."""
    env = {**env, "seq": seq}
    head = dumps({"fmt": DATA_LAST, "seq": seq, "target_sid": target, "session_id": "s", "event": event,
                  "timestamp": 1.0})
    return RelayMessage.from_raw(head[:-1] + ',"data":' + dumps(env) + "}")


def delta(seq: int, text: str, *, marker: str = "answer", index: int = 0, turn: E.ConvCtx = TURN,
          agent: str | None = None, completed: bool = False, target: str | None = None) -> RelayMessage:
    return _wire(seq, "chat_delta", E.delta(SVC, turn, text=text, index=index, marker=marker, agent=agent,
                                            completed=completed, now=1000.0 + seq), target)


def step(seq: int) -> RelayMessage:
    return _wire(seq, "chat_step", E.step(SVC, TURN, step="search", status="running", now=1000.0 + seq))


def merging_outbox(maxlen: int = 100) -> Outbox:
    return Outbox("conn", maxlen, merge_at=0.0)  # merge into any untaken tail


def offer_all(ob: Outbox, msgs: list[RelayMessage]) -> list[RelayMessage]:
    for m in msgs:
        ob.offer(m)
    return ob._q.take_nowait()


def test_consecutive_deltas_of_one_stream_become_one_with_the_joined_text_and_covered_range():
    ob = merging_outbox()
    [m] = offer_all(ob, [delta(3, "Hel"), delta(4, "lo, "), delta(5, "wörld ✓")])
    assert isinstance(m, MergedDelta) and m.seq == 5 and m.seq_from == 3 and ob.merged == 2
    env = json.loads(m.data_json())
    E.validate(env)  # still a well-formed delta envelope
    assert env["delta"]["text"] == env["text"] == "Hello, wörld ✓"
    assert (env["seq_from"], env["seq"], env["idx"], env["delta"]["marker"]) == (3, 5, 0, "answer")
    assert env["ts"] == 1005000  # the last one's time
    assert m.sse_bytes().startswith(b"event: chat_delta\nid: 5\n") and m.sse_bytes() is m.sse_bytes()
    assert m.sio_text().startswith('42["chat_delta",{') and '"seq_from":3' in m.sio_text()


@pytest.mark.parametrize("other", [
    delta(2, "b", marker="thinking"),
    delta(2, "b", index=2),  # a jump: the pieces of a stream are numbered 0, 1, 2 ...
    delta(2, "b", turn=E.ConvCtx(session_id="s", conversation_id="c", turn_id="t2")),
    delta(2, "b", turn=E.ConvCtx(session_id="s", conversation_id="c2", turn_id="t1")),
    delta(2, "b", agent="researcher"),
    delta(2, "b", target="conn"),  # targeted at this connection vs. sent to the whole session
    delta(2, "b", marker="thinking", index=1),
], ids=["marker", "index-jump", "turn", "conversation", "agent", "target", "marker-next-index"])
def test_deltas_of_different_streams_never_merge(other):
    ob = merging_outbox()
    got = offer_all(ob, [delta(1, "a"), other])
    assert [m.seq for m in got] == [1, 2] and ob.merged == 0
    assert [json.loads(m.data_json())["text"] for m in got] == ["a", "b"]


def test_numbered_pieces_merge_into_the_last_piece_with_the_joined_text():
    ob = merging_outbox()
    [m] = offer_all(ob, [delta(7, "a", index=0), delta(8, "b", index=1), delta(9, "c", index=2),
                         delta(10, "", index=2, completed=True)])
    env = json.loads(m.data_json())
    assert (env["seq_from"], env["seq"], env["idx"], env["delta"]["index"]) == (7, 10, 2, 2)
    assert env["text"] == "abc" and env["delta"]["completed"] is True
    assert [m.seq for m in offer_all(ob, [delta(11, "x", index=1), delta(12, "y", index=0)])] == [11, 12]


def test_other_events_are_barriers_and_keep_their_place():
    ob = merging_outbox()
    got = offer_all(ob, [delta(1, "a"), delta(2, "b"), step(3), delta(4, "c"), delta(5, "d")])
    assert [(m.event, m.seq) for m in got] == [("chat_delta", 2), ("chat_step", 3), ("chat_delta", 5)]
    assert [json.loads(m.data_json()).get("seq_from") for m in got] == [1, None, 4]
    assert json.loads(got[0].data_json())["text"] == "ab" and json.loads(got[2].data_json())["text"] == "cd"


def test_a_completed_delta_absorbs_nothing_and_completed_comes_from_the_last():
    ob = merging_outbox()
    got = offer_all(ob, [delta(1, "a"), delta(2, "b", completed=True), delta(3, "c")])
    assert [m.seq for m in got] == [2, 3]
    assert json.loads(got[0].data_json())["delta"]["completed"] is True


def test_a_taken_delta_is_never_merged_into():
    ob = merging_outbox()
    first = offer_all(ob, [delta(1, "a")])
    second = offer_all(ob, [delta(2, "b"), delta(3, "c")])
    assert [m.seq for m in first] == [1] and [(m.seq, m.seq_from) for m in second] == [(3, 2)]


def test_below_the_threshold_nothing_is_decoded_or_merged():
    ob = Outbox("conn", 10, merge_at=0.5)
    msgs = [delta(i, str(i)) for i in range(1, 6)]
    for m in msgs:
        ob.offer(m)
    assert ob.depth() == 5 and ob.merged == 0
    assert all(m._data is None for m in msgs)  # the hot path kept the JSON text as it came
    ob.offer(delta(6, "6"))  # the 6th finds 5 waiting (the threshold): joined to the tail
    got = ob._q.take_nowait()
    assert [m.seq for m in got] == [1, 2, 3, 4, 6] and json.loads(got[-1].data_json())["text"] == "56"
    assert all(m._data is None for m in msgs[:4])


def test_a_full_outbox_merges_what_it_holds_before_it_closes():
    ob = Outbox("conn", 4, merge_at=1.0)  # merges only once full
    for m in [delta(1, "a"), delta(2, "b"), step(3), step(4), step(5)]:
        ob.offer(m)
    assert ob.closed_reason is None and ob.merged == 1
    got = ob._q.take_nowait()
    assert [(m.event, m.seq) for m in got] == [("chat_delta", 2), ("chat_step", 3), ("chat_step", 4),
                                                ("chat_step", 5)]
    assert json.loads(got[0].data_json())["text"] == "ab"


def test_when_merging_cannot_help_the_outbox_closes_with_its_reason():
    ob = Outbox("conn", 3, merge_at=0.0)
    for m in [delta(1, "a"), step(2), delta(3, "b", marker="thinking"), step(4)]:
        ob.offer(m)
    assert ob.closed_reason == Closed(CloseReason.OUTBOX_FULL, "more than 3 events waiting (SSE_CLIENT_QUEUE)")
    # ... while the same number of deltas of one stream keeps it open with one event queued
    ob = Outbox("conn", 3, merge_at=0.0)
    for i in range(1, 1001):
        ob.offer(delta(i, "x"))
    assert ob.closed_reason is None and ob.depth() == 1 and ob.merged == 999


def test_replay_and_live_never_double_up_across_a_merge():
    ob = merging_outbox()
    ob.hold()
    ob.offer(delta(3, "c"))  # live, held while the log is read
    ob.offer_replayed(delta(1, "a"))
    ob.offer_replayed(delta(2, "b"))
    ob.offer_replayed(delta(3, "c"))
    ob.release()
    [m] = ob._q.take_nowait()
    assert (m.seq_from, m.seq, json.loads(m.data_json())["text"]) == (1, 3, "abc")


def test_compact_keeps_order_and_merges_runs_only():
    msgs = [delta(1, "a"), delta(2, "b", index=1), step(3), delta(4, "c"), delta(5, "d", index=5),
            delta(6, "e", index=5)]
    got = compact(msgs)
    assert [(m.seq, getattr(m, "seq_from", m.seq)) for m in got] == [(2, 1), (3, 3), (4, 4), (6, 5)]
    assert "".join(json.loads(m.data_json()).get("text", "") for m in got) == "abcde"


def test_non_deltas_and_unsequenced_deltas_are_never_merged():
    ob = merging_outbox()
    unsequenced = [RelayMessage(session_id="s", event="chat_delta", seq=0, timestamp=0.0,
                                data=E.delta(SVC, TURN, text=t, index=0)) for t in "ab"]
    got = offer_all(ob, [step(1), step(2), *unsequenced])
    assert len(got) == 4 and ob.merged == 0
