"""KDCube's current message form (`external_events`), the older forms' text, and the normalized
message the bundle sees: over JSON, multipart (`event_submission`) and Socket.IO-style files."""

from __future__ import annotations

import hashlib

import pytest

from kdc_trio.ingress import IngressError, RawFile, build_message, parse_chat_body
from kdc_trio.ingress.models import FOLLOWUP, PROMPT, STEER
from tests.ingress.helpers import DEFAULT_LIMITS, MULTIPART_CT, feed, form, jbody, part, small_limits


def prompt(text, type_=PROMPT, **kw):
    return {"event_id": "e-1", "type": type_, "event_source_id": "chat.message", "reactive": True,
            "payload": {"mime": "text/plain", "event": {"text": text}}, **kw}


def attachment(filename, size, mime, file_index=None):
    body = {"filename": filename, "size": size, "mime": mime}
    if file_index is not None:
        body["file_index"] = file_index
    return {"type": "event.user.attachment.file", "event_source_id": "chat.attachment",
            "payload": {"mime": mime, "event": body}}


def submission(*events, **kw):
    return {"external_events": list(events), "chat_history": [], "tenant": "home", "project": "demo", **kw}


def refused(obj, files=(), limits=DEFAULT_LIMITS, **kw) -> IngressError:
    with pytest.raises(IngressError) as ei:
        build_message(obj, list(files), limits, **kw)
    return ei.value


# -- the KDCube form ---------------------------------------------------------------------------

def test_prompt_text_ids_history_and_events_as_received():
    history = [{"role": "user", "content": "earlier", "id": 1}]
    obj = submission(prompt("hello"), {"type": "my.custom.event", "payload": {"x": [1, 2]}},
                     turn_id="turn_2026-11-30-16-00-00-123", conversation_id="c-9", chat_history=history,
                     bundle_id="demo", payload={"k": "v"})
    m = build_message(obj, [], DEFAULT_LIMITS)
    assert m.text == "hello"
    assert m.turn_id == "turn_2026-11-30-16-00-00-123" and m.conversation_id == "c-9"
    assert m.chat_history == history
    assert m.external_events == obj["external_events"]  # unknown types pass through untouched
    assert m.event_type == PROMPT and m.active_turn_id is None
    assert (m.tenant, m.project) == ("home", "demo")
    assert m.payload["bundle_id"] == "demo" and m.payload["text"] == "hello"
    assert "external_events" not in m.payload and "chat_history" not in m.payload


def test_attachments_matched_by_file_index_whatever_the_order():
    files = [RawFile("b.png", "image/png", b"\x89PNG-b"), RawFile("a.txt", "text/plain", b"alpha")]
    obj = submission(prompt("two files"), attachment("a.txt", 5, "text/plain", 1),
                     attachment("b.png", 6, "image/png", 0))
    m = build_message(obj, files, DEFAULT_LIMITS)
    got = [a.describe() for a in m.attachments]
    assert got == [
        {"filename": "b.png", "mime": "image/png", "size": 6, "sha256": hashlib.sha256(b"\x89PNG-b").hexdigest()},
        {"filename": "a.txt", "mime": "text/plain", "size": 5, "sha256": hashlib.sha256(b"alpha").hexdigest()},
    ]
    assert m.attachments[0].meta["file_index"] == 0


def test_nameless_binary_files_take_name_and_mime_from_their_events():
    """Socket.IO: the files are bare binary arguments; the events describe them."""
    files = [RawFile(None, None, b"one"), RawFile(None, None, b"two")]
    obj = submission(prompt(""), attachment("x.pdf", 3, "application/pdf", 1), attachment("y.csv", 3, "text/csv", 0))
    m = build_message(obj, files, DEFAULT_LIMITS, match="position")
    assert [(a.filename, a.mime, bytes(a.data)) for a in m.attachments] == [
        ("y.csv", "text/csv", b"one"), ("x.pdf", "application/pdf", b"two")]


def test_events_without_file_index_pair_by_order_and_extra_files_get_names():
    files = [RawFile(None, None, b"1"), RawFile(None, None, b"2")]
    m = build_message(submission(attachment("first.txt", 1, "text/plain")), files, DEFAULT_LIMITS)
    assert [a.filename for a in m.attachments] == ["first.txt", "attachment-2"]


def test_followup_steer_and_the_turn_they_target():
    m = build_message(submission(prompt("more", FOLLOWUP), active_turn_id="t-1", target_turn_id="t-2"), [],
                      DEFAULT_LIMITS)
    assert m.event_type == FOLLOWUP and m.active_turn_id == "t-2"  # KDCube reads target_turn_id first
    m = build_message(submission(prompt("", STEER), payload={"active_turn_id": "t-3"}), [], DEFAULT_LIMITS)
    assert m.event_type == STEER and m.is_steer and m.text == "" and m.active_turn_id == "t-3"
    # a steer anywhere makes the submission a steer (KDCube: active-turn control)
    m = build_message(submission(prompt("a"), prompt("stop", STEER)), [], DEFAULT_LIMITS)
    assert m.event_type == STEER


def test_every_text_is_kept_in_order():
    m = build_message(submission(prompt("one"), prompt("two", FOLLOWUP), message="three"), [], DEFAULT_LIMITS)
    assert m.text == "one\n\ntwo\n\nthree"
    body = {"type": PROMPT, "payload": {"event": {"message": "from message key"}}}
    assert build_message(submission(body), [], DEFAULT_LIMITS).text == "from message key"
    assert build_message(submission({"type": PROMPT, "payload": {"event": "bare"}}), [], DEFAULT_LIMITS).text == "bare"


def test_events_without_text_or_files_are_a_message():
    m = build_message(submission({"type": "event.app.button", "payload": {"event": {"id": 3}}}), [], DEFAULT_LIMITS)
    assert m.text == "" and len(m.external_events) == 1


@pytest.mark.parametrize(("obj", "files", "status"), [
    ({"external_events": {}}, 0, 422),
    ({"external_events": "x"}, 0, 422),
    ({"external_events": [5]}, 0, 422),
    ({"external_events": [{"type": 3}]}, 0, 422),
    ({"external_events": [{"type": "x", "payload": []}]}, 0, 422),
    ({"external_events": [{"type": PROMPT, "payload": {"event": {"text": 5}}}]}, 0, 422),
    ({"external_events": [{"type": PROMPT, "payload": {"event": 5}}]}, 0, 422),
    ({"external_events": [{"type": "event.user.attachment.file", "payload": {"event": "x"}}]}, 0, 422),
    ({"external_events": [attachment("a", 1, "text/plain", 2)]}, 2, 422),   # names a file that did not come
    ({"external_events": [attachment("a", 1, "text/plain", 0), attachment("b", 1, "text/plain", 0)]}, 2, 422),
    ({"external_events": [attachment("a", 1, "text/plain", -1)]}, 1, 422),
    ({"external_events": [attachment("a", 1, "text/plain", "0")]}, 1, 422),
    ({"external_events": [attachment("a", 1, "text/plain", True)]}, 1, 422),
    ({"external_events": [attachment(5, 1, "text/plain", 0)]}, 1, 422),
    ({"external_events": []}, 0, 422),  # empty
    ({"external_events": [prompt("x")], "chat_history": {"a": 1}}, 0, 422),
    ({"external_events": [prompt("x")], "active_turn_id": "bad id"}, 0, 422),
    ({"external_events": [prompt("x")], "target_turn_id": 7}, 0, 422),
    ({"external_events": [prompt("x")], "tenant": "a:b"}, 0, 422),
    ({"external_events": [prompt("x")], "turn_id": "../x"}, 0, 422),
])
def test_malformed_submissions(obj, files, status):
    e = refused(obj, [RawFile(None, None, b"z")] * files)
    assert e.status == status, e


def test_event_count_limit_names_its_setting():
    e = refused(submission(*[prompt("x")] * 5), limits=small_limits(max_external_events=4))
    assert (e.status, e.limit) == (413, "KDC_MAX_EXTERNAL_EVENTS")


def test_refusal_keeps_the_requests_own_ids():
    e = refused({"external_events": [5], "conversation_id": "c-7", "turn_id": "t-7"})
    assert (e.conversation_id, e.turn_id) == ("c-7", "t-7")
    e = refused({"message": {"text": 5, "conversation_id": "c-8"}})
    assert (e.conversation_id, e.turn_id) == ("c-8", None)
    e = refused({"external_events": [5], "conversation_id": "no good"})
    assert e.conversation_id is None


# -- the older forms never drop text -----------------------------------------------------------

def test_message_message_form_keeps_its_text_with_attachments():
    f = RawFile("a.txt", "text/plain", b"abc")
    m = build_message({"message": {"message": "look at this", "turn_id": "t-1", "conversation_id": "c-1",
                                   "chat_history": [{"role": "user", "content": "x"}]},
                       "attachment_meta": [{"filename": "a.txt"}]}, [f], DEFAULT_LIMITS)
    assert m.text == "look at this" and m.turn_id == "t-1" and m.conversation_id == "c-1"
    assert len(m.attachments) == 1 and m.chat_history == [{"role": "user", "content": "x"}]
    m = build_message({"message": "plain", "attachment_meta": [{"filename": "a.txt"}]}, [f], DEFAULT_LIMITS)
    assert m.text == "plain" and len(m.attachments) == 1


# -- multipart `event_submission` ----------------------------------------------------------------

KDC_FORM = form(
    part("event_submission", jbody(submission(prompt("with files"), attachment("a.txt", 5, "text/plain", 1),
                                              attachment("b.bin", 4, "application/octet-stream", 0),
                                              conversation_id="c-m", turn_id="t-m"))),
    part("files", b"\x00\x01\x02\x03", filename="b.bin", ctype="application/octet-stream"),
    part("files", b"alpha", filename="a.txt", ctype="text/plain"),
)


async def test_multipart_event_submission_at_every_split():
    expected = await parse_chat_body(MULTIPART_CT, feed([KDC_FORM]), DEFAULT_LIMITS)
    assert expected.text == "with files" and (expected.conversation_id, expected.turn_id) == ("c-m", "t-m")
    assert [(a.filename, bytes(a.data)) for a in expected.attachments] == [("b.bin", b"\x00\x01\x02\x03"),
                                                                           ("a.txt", b"alpha")]
    for i in range(0, len(KDC_FORM) + 1, 7):
        got = await parse_chat_body(MULTIPART_CT, feed([KDC_FORM[:i], KDC_FORM[i:]]), DEFAULT_LIMITS)
        assert [a.describe() for a in got.attachments] == [a.describe() for a in expected.attachments], i


@pytest.mark.parametrize("body", [
    form(part("event_submission", b"[1]")),
    form(part("event_submission", b"{not json")),
    form(part("event_submission", jbody(submission(prompt("a")))), part("message", jbody({"message": "b"}))),
    form(part("event_submission", jbody(submission(prompt("a")))), part("event_submission", b"{}")),
])
async def test_multipart_bad_event_submission_is_400(body):
    with pytest.raises(IngressError) as ei:
        await parse_chat_body(MULTIPART_CT, feed([body]), DEFAULT_LIMITS)
    assert ei.value.status == 400


async def test_json_body_in_kdcube_form():
    m = await parse_chat_body("application/json", feed([jbody(submission(prompt("json")))]), DEFAULT_LIMITS)
    assert m.text == "json" and m.external_events[0]["type"] == PROMPT
