"""Property tests: untrusted input to ingress ends in a ChatMessage or an IngressError, nothing else."""

from __future__ import annotations

import tracemalloc

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdc_trio.ingress import ChatMessage, IngressError, RawFile, build_message, parse_chat_body
from tests.ingress.helpers import (
    DEFAULT_LIMITS,
    MULTIPART_CT,
    feed,
    form,
    jbody,
    part,
    small_limits,
    split,
    summary,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = small_limits(max_file_bytes=200, max_files=3, max_total_bytes=600, max_text_chars=50)

VALID = form(
    part("message", jbody({"message": {"text": "fuzz", "conversation_id": "c1"}})),
    part("attachment_meta", jbody([{"filename": "a", "mime": "text/plain"}])),
    part("files", b"\x00\x01\r\n--x", filename="a", ctype="application/octet-stream"),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["message", "text", "attachment_meta", "conversation_id", "turn_id", "filename", "mime", "x"]),
        inner, max_size=5),
    max_leaves=20,
)


def run_parse(ct, body: bytes, sizes: list[int]) -> ChatMessage | IngressError:
    async def go():
        try:
            return await parse_chat_body(ct, feed(split(body, sizes)), LIMITS)
        except IngressError as exc:
            return exc
    return trio.run(go)


@FUZZ
@given(body=st.binary(max_size=400), sizes=st.lists(st.integers(1, 64), max_size=20))
def test_random_bytes_as_json(body, sizes):
    assert isinstance(run_parse("application/json", body, sizes), (ChatMessage, IngressError))


@FUZZ
@given(body=st.binary(max_size=400), sizes=st.lists(st.integers(1, 64), max_size=20))
def test_random_bytes_as_multipart(body, sizes):
    assert isinstance(run_parse(MULTIPART_CT, body, sizes), (ChatMessage, IngressError))


@FUZZ
@given(data=st.data(), sizes=st.lists(st.integers(1, 64), max_size=20))
def test_mutated_multipart(data, sizes):
    body = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body)))
        op = data.draw(st.sampled_from(["del", "ins", "set"]))
        if op == "del":
            del body[pos:pos + data.draw(st.integers(1, 16))]
        elif op == "ins":
            body[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif body:
            body[min(pos, len(body) - 1)] = data.draw(st.integers(0, 255))
    assert isinstance(run_parse(MULTIPART_CT, bytes(body), sizes), (ChatMessage, IngressError))


@FUZZ
@given(ct=st.text(max_size=80), body=st.binary(max_size=100))
def test_random_content_types(ct, body):
    assert isinstance(run_parse(ct, body, []), (ChatMessage, IngressError))


@FUZZ
@given(obj=json_values, n_files=st.integers(0, 4), match=st.sampled_from(["filename", "position"]))
def test_build_message_on_random_json(obj, n_files, match):
    files = [RawFile(f"f{i}" if i % 2 else None, None, b"x" * i) for i in range(n_files)]
    try:
        m = build_message(obj, files, LIMITS, match=match)
    except IngressError as exc:
        assert exc.status in (400, 413, 422)
        return
    assert len(m.attachments) == n_files
    assert m.total_bytes <= LIMITS.max_total_bytes and len(m.text) <= LIMITS.max_text_chars


@FUZZ
@given(sizes=st.lists(st.integers(1, 97), min_size=1, max_size=50))
def test_valid_body_any_chunking_same_message(sizes):
    expected = run_parse(MULTIPART_CT, VALID, [len(VALID)])
    got = run_parse(MULTIPART_CT, VALID, sizes)
    assert isinstance(got, ChatMessage) and isinstance(expected, ChatMessage)
    assert summary(got) == summary(expected)


async def test_a_big_file_is_held_once():
    """Peak memory while parsing a 4 MiB file part stays near one copy of it (no second body)."""
    size = 4 * 1024 * 1024
    payload = b"\xab" * size
    body = form(part("message", b'"big"'), part("files", payload, filename="big"))
    chunks = split(body, [64 * 1024] * (len(body) // (64 * 1024) + 1))
    del payload, body
    tracemalloc.start()
    try:
        m = await parse_chat_body(MULTIPART_CT, feed(chunks), DEFAULT_LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert m.attachments[0].size == size
    assert peak < size * 1.5, peak
