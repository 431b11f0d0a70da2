"""build_message: the three message forms, ids, attachment_meta matching, every limit."""

from __future__ import annotations

import json

import pytest

from kdc_trio.ingress import IngressError, Limits, RawFile, build_message
from kdc_trio.ingress.errors import IngressError as ErrorsIngressError
from protocol.errors import RemoteProtocolError
from tests.ingress.helpers import DEFAULT_LIMITS, small_limits


def refused(obj, files=(), limits=DEFAULT_LIMITS, **kw) -> IngressError:
    with pytest.raises(IngressError) as ei:
        build_message(obj, list(files), limits, **kw)
    return ei.value


# -- forms ------------------------------------------------------------------------------------

def test_form_message_object():
    m = build_message({"message": {"text": "hi", "lang": "en"}}, [], DEFAULT_LIMITS)
    assert m.text == "hi"
    assert m.payload == {"text": "hi", "lang": "en"}
    assert m.attachments == [] and m.conversation_id is None and m.turn_id is None


def test_form_message_string():
    m = build_message({"message": "hello"}, [], DEFAULT_LIMITS)
    assert m.text == "hello" and m.payload == {"text": "hello"}


def test_form_text_top_level():
    m = build_message({"text": "yo", "conversation_id": "c-1", "extra": [1]}, [], DEFAULT_LIMITS)
    assert m.text == "yo" and m.conversation_id == "c-1"
    assert m.payload["extra"] == [1] and m.payload["text"] == "yo"


def test_payload_drops_attachment_meta():
    raw = RawFile("a.txt", "text/plain", b"x")
    m = build_message({"message": {"text": "t", "attachment_meta": [{"filename": "a.txt"}]}}, [raw],
                      DEFAULT_LIMITS)
    assert "attachment_meta" not in m.payload


@pytest.mark.parametrize("obj", [
    [], "hi", 3, None, {}, {"msg": "x"}, {"message": 5}, {"message": None}, {"message": ["a"]},
    {"text": 5}, {"message": {"text": {"a": 1}}},
])
def test_bad_shapes_are_422(obj):
    e = refused(obj)
    assert e.status == 422 and e.error == "invalid_message" and e.limit is None


def test_empty_message_without_attachments_is_422():
    assert refused({"message": {"text": ""}}).status == 422
    assert refused({"message": {}}).status == 422


def test_empty_text_with_attachment_is_fine():
    m = build_message({"message": {}}, [RawFile("a", None, b"1")], DEFAULT_LIMITS)
    assert m.text == "" and len(m.attachments) == 1


def test_lone_surrogate_text_is_refused():
    obj = json.loads('{"message": "\\ud800"}')
    assert refused(obj).status == 422


def test_error_is_a_remote_protocol_error_with_reply():
    e = refused({"text": "x" * 101}, limits=small_limits())
    assert isinstance(e, RemoteProtocolError) and e.error_status_hint == 413
    assert e.as_dict() == {"error": "payload_too_large", "detail": e.detail, "limit": "CHAT_MAX_MESSAGE_CHARS"}
    assert ErrorsIngressError is IngressError
    assert "limit" not in refused([]).as_dict()


# -- ids --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cid", ["c1", "conv_01H8XYZ", "3f2b1a9c-1111-4222-8333-444455556666", "a.b", "A" * 128])
def test_good_conversation_ids(cid):
    m = build_message({"message": {"text": "t", "conversation_id": cid, "turn_id": "turn-1"}}, [], DEFAULT_LIMITS)
    assert m.conversation_id == cid and m.turn_id == "turn-1"


@pytest.mark.parametrize("cid", ["A" * 129, "a b", "a:b", ".hidden", "a/b", "ü", "a\n", 5, ["x"], {"a": 1}, True])
def test_bad_conversation_ids_are_422(cid):
    for obj in ({"message": {"text": "t"}, "conversation_id": cid}, {"message": {"text": "t", "conversation_id": cid}}):
        e = refused(obj)
        assert e.status == 422 and "conversation_id" in e.detail
    assert "turn_id" in refused({"text": "t", "turn_id": cid}).detail


def test_top_level_id_wins_and_empty_means_none():
    m = build_message({"message": {"text": "t", "conversation_id": "inner"}, "conversation_id": "outer"}, [],
                      DEFAULT_LIMITS)
    assert m.conversation_id == "outer"
    m = build_message({"message": {"text": "t", "conversation_id": "inner"}, "conversation_id": ""}, [],
                      DEFAULT_LIMITS)
    assert m.conversation_id == "inner"
    assert build_message({"text": "t", "conversation_id": None}, [], DEFAULT_LIMITS).conversation_id is None


# -- attachment_meta matching -----------------------------------------------------------------

FILES = [RawFile("a.png", None, b"AAA"), RawFile("b.pdf", "application/pdf", bytearray(b"BB"))]


def test_meta_matched_by_filename_regardless_of_order():
    meta = [{"filename": "b.pdf", "mime": "text/plain", "k": 2}, {"filename": "a.png", "mime": "image/png", "k": 1}]
    m = build_message({"message": "t", "attachment_meta": meta}, FILES, DEFAULT_LIMITS)
    a, b = m.attachments
    assert (a.filename, a.mime, a.meta["k"]) == ("a.png", "image/png", 1)
    # the part's own non-generic type wins over meta
    assert (b.filename, b.mime, b.meta["k"]) == ("b.pdf", "application/pdf", 2)


def test_meta_by_position_when_names_do_not_match():
    meta = [{"filename": "x", "k": 1}, {"filename": "y", "k": 2}]
    m = build_message({"message": "t", "attachment_meta": meta}, FILES, DEFAULT_LIMITS)
    assert [a.meta["k"] for a in m.attachments] == [1, 2]
    assert [a.filename for a in m.attachments] == ["a.png", "b.pdf"]  # the part's name wins


def test_meta_mixed_name_and_position():
    files = [RawFile("one", None, b"1"), RawFile("two", None, b"2"), RawFile("three", None, b"3")]
    meta = [{"filename": "zzz", "k": "first-leftover"}, {"filename": "two", "k": "two"}]
    m = build_message({"message": "t", "attachment_meta": meta}, files, DEFAULT_LIMITS)
    assert [a.meta.get("k") for a in m.attachments] == ["first-leftover", "two", None]


def test_duplicate_filenames_pair_in_order():
    files = [RawFile("same", None, b"1"), RawFile("same", None, b"2")]
    meta = [{"filename": "same", "k": 1}, {"filename": "same", "k": 2}]
    m = build_message({"message": "t", "attachment_meta": meta}, files, DEFAULT_LIMITS)
    assert [a.meta["k"] for a in m.attachments] == [1, 2]


def test_meta_as_json_string_and_inside_message():
    meta = [{"filename": "a.png", "mime": "image/png"}, {"filename": "b.pdf"}]
    for obj in ({"message": "t", "attachment_meta": json.dumps(meta)},
                {"message": {"text": "t", "attachment_meta": meta}},
                {"message": {"text": "t", "attachment_meta": json.dumps(meta)}}):
        m = build_message(obj, FILES, DEFAULT_LIMITS)
        assert m.attachments[0].mime == "image/png"


def test_position_mode_uses_meta_names_and_mime():
    files = [RawFile(None, None, b"1"), RawFile(None, None, bytearray(b"22"))]
    meta = [{"filename": "x.txt", "mime": "text/plain; charset=utf-8"}, {"filename": "y.bin"}]
    m = build_message({"message": "t", "attachment_meta": meta}, files, DEFAULT_LIMITS, match="position")
    assert [(a.filename, a.mime, a.meta) for a in m.attachments] == [
        ("x.txt", "text/plain", meta[0]), ("y.bin", "application/octet-stream", meta[1])]


@pytest.mark.parametrize("n_meta,n_files", [(1, 2), (2, 1), (0, 1), (3, 0)])
def test_position_mode_count_mismatch_names_both_counts(n_meta, n_files):
    meta = [{"filename": f"f{i}"} for i in range(n_meta)]
    files = [RawFile(None, None, b"x") for _ in range(n_files)]
    e = refused({"message": "t", "attachment_meta": meta}, files, match="position")
    assert e.status == 422
    assert f"{n_meta} entries" in e.detail and f"{n_files} attachments" in e.detail


def test_position_mode_without_meta_and_files_is_an_error():
    e = refused({"message": "t"}, [RawFile(None, None, b"x")], match="position")
    assert "0 entries" in e.detail and "1 attachments" in e.detail


def test_filename_mode_more_meta_than_files_is_an_error():
    e = refused({"message": "t", "attachment_meta": [{}, {}, {}]}, FILES)
    assert e.status == 422 and "3 entries" in e.detail and "2 attachments" in e.detail


def test_filename_mode_fewer_meta_is_fine():
    m = build_message({"message": "t", "attachment_meta": [{"filename": "b.pdf"}]}, FILES, DEFAULT_LIMITS)
    assert m.attachments[0].meta == {} and m.attachments[1].meta == {"filename": "b.pdf"}


@pytest.mark.parametrize("meta,status", [
    ("not json", 400), ("{}", 422), ({"a": 1}, 422), (5, 422), ([1, 2], 422), (["x", "y"], 422),
    ([{"filename": 3}, {}], 422), ([{"mime": ["x"]}, {}], 422),
])
def test_bad_meta(meta, status):
    assert refused({"message": "t", "attachment_meta": meta}, FILES).status == status


def test_fallback_names_and_bad_mime_ignored():
    files = [RawFile(None, "garbage", b"1"), RawFile("", None, b"2")]
    m = build_message({"message": "t", "attachment_meta": [{"mime": "also garbage"}]}, files, DEFAULT_LIMITS)
    assert [(a.filename, a.mime) for a in m.attachments] == [
        ("attachment-1", "application/octet-stream"), ("attachment-2", "application/octet-stream")]


def test_octet_stream_part_takes_meta_mime():
    files = [RawFile("a", "application/octet-stream", b"1")]
    m = build_message({"message": "t", "attachment_meta": [{"filename": "a", "mime": "Image/PNG"}]}, files,
                      DEFAULT_LIMITS)
    assert m.attachments[0].mime == "image/png"


@pytest.mark.parametrize("name", ["a\x00b", "x\ny", "n" * 256, "\ud800"])
def test_bad_filenames_are_422(name):
    assert refused({"message": "t"}, [RawFile(name, None, b"1")]).status == 422


def test_attachment_bytes_are_not_copied():
    data = bytearray(b"\x00\xff" * 1000)
    raw = RawFile("f", None, data)
    m = build_message({"message": "t"}, [raw], DEFAULT_LIMITS)
    assert m.attachments[0].data is data


# -- limits -----------------------------------------------------------------------------------

def test_text_limit_413_names_setting():
    lim = small_limits(max_text_chars=5)
    assert build_message({"text": "é" * 5}, [], lim).text == "é" * 5
    e = refused({"text": "é" * 6}, limits=lim)
    assert (e.status, e.error, e.limit) == (413, "payload_too_large", "CHAT_MAX_MESSAGE_CHARS")


def test_file_count_limit():
    lim = small_limits(max_files=2)
    files = [RawFile(None, None, b"x")] * 3
    assert len(build_message({"text": "t"}, files[:2], lim).attachments) == 2
    e = refused({"text": "t"}, files, limits=lim)
    assert (e.status, e.limit) == (413, "KDC_MAX_FILES_PER_MESSAGE")
    e = refused({"text": "t", "attachment_meta": [{}] * 3}, files[:1], limits=lim)
    assert (e.status, e.limit) == (413, "KDC_MAX_FILES_PER_MESSAGE")


def test_file_size_limit():
    lim = small_limits(max_file_bytes=10)
    assert build_message({"text": "t"}, [RawFile("a", None, b"x" * 10)], lim).attachments[0].size == 10
    e = refused({"text": "t"}, [RawFile("a", None, b"x" * 11)], limits=lim)
    assert (e.status, e.limit) == (413, "CHAT_MAX_UPLOAD_MB") and "a" in e.detail


def test_total_limit_counts_text_bytes_and_files():
    lim = small_limits(max_total_bytes=20, max_file_bytes=20)
    ok = build_message({"text": "é" * 5}, [RawFile("a", None, b"x" * 10)], lim)  # 10 + 10 bytes
    assert ok.total_bytes == 20
    e = refused({"text": "é" * 5 + "!"}, [RawFile("a", None, b"x" * 10)], limits=lim)
    assert (e.status, e.limit) == (413, "MESSAGE_MAX_BYTES")


def test_limits_from_settings_and_validation():
    from kdc_trio.config import Settings
    lim = Limits.from_settings(Settings.from_env({"CHAT_MAX_UPLOAD_MB": "1.5", "MESSAGE_MAX_BYTES": "100"}))
    assert lim.max_file_bytes == int(1.5 * 1024 * 1024) and lim.max_total_bytes == 100
    with pytest.raises(ValueError):
        Limits(max_file_bytes=-1, max_files=1, max_total_bytes=1, max_text_chars=1)
    with pytest.raises(ValueError):
        build_message({"text": "t"}, [], lim, match="nope")
