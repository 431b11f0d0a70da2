"""parse_chat_body: JSON and streaming multipart, limits while streaming, malformed bodies."""

from __future__ import annotations

import json
import os
import random
from typing import AsyncIterator

import pytest

from kdc_trio.ingress import IngressError, parse_chat_body
from tests.ingress.helpers import (
    BOUNDARY,
    DEFAULT_LIMITS,
    MULTIPART_CT,
    feed,
    form,
    httpx_form,
    jbody,
    part,
    small_limits,
    split,
    summary,
)


async def parse(ct, body, limits=DEFAULT_LIMITS, chunks=None):
    return await parse_chat_body(ct, feed(chunks if chunks is not None else [body]), limits)


async def refused(ct, body, limits=DEFAULT_LIMITS, chunks=None) -> IngressError:
    with pytest.raises(IngressError) as ei:
        await parse(ct, body, limits, chunks)
    return ei.value


SMALL_FORM = form(
    part("message", jbody({"message": {"text": "héllo", "conversation_id": "c-1"}})),
    part("attachment_meta", jbody([{"filename": "b.bin", "mime": "image/png", "n": 2},
                                   {"filename": "a.txt", "n": 1}])),
    part("files", b"alpha\r\n--kdc not a boundary\r\n", filename="a.txt", ctype="text/plain"),
    part("files", bytes(range(256)) + b"\r\n--" + BOUNDARY.encode()[:-1], filename="b.bin",
         ctype="application/octet-stream"),
)


# -- JSON ---------------------------------------------------------------------------------------

async def test_json_three_forms():
    for obj, text in (({"message": {"text": "a"}}, "a"), ({"message": "b"}, "b"), ({"text": "c"}, "c")):
        m = await parse("application/json", jbody(obj))
        assert m.text == text and m.attachments == []
    m = await parse("Application/JSON; charset=utf-8", jbody({"text": "x", "turn_id": "t1"}),
                    chunks=[b'{"text": "x",', b' "turn_id": "t1"}'])
    assert m.turn_id == "t1"


@pytest.mark.parametrize("body,why", [
    (b"", "empty"), (b"   ", "empty"), (b"{", "JSON"), (b"\xff\xfe{}", "UTF-8"), (b'{"text": "\xe9"}', "UTF-8"),
    (b"\xef\xbb\xbf{}", "JSON"),
], ids=["empty", "blank", "open-brace", "utf16-bom", "latin1", "utf8-bom"])
async def test_json_malformed_is_400(body, why):
    e = await refused("application/json", body)
    assert e.status == 400 and why in e.detail


async def test_json_deep_nesting_is_400():
    for body in (b"[" * 100_000 + b"]" * 100_000, b"[" * 100_000):
        e = await refused("application/json", body)
        assert e.status == 400


async def test_json_body_limit_stops_reading():
    lim = small_limits(max_total_bytes=100)
    pulled = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(100):
            pulled.append(i)
            yield b" " * 60

    with pytest.raises(IngressError) as ei:
        await parse_chat_body("application/json", chunks(), lim)
    assert (ei.value.status, ei.value.limit) == (413, "MESSAGE_MAX_BYTES")
    assert len(pulled) == 2


async def test_json_text_limit():
    e = await refused("application/json", jbody({"text": "x" * 101}), small_limits())
    assert (e.status, e.limit) == (413, "CHAT_MAX_MESSAGE_CHARS")


@pytest.mark.parametrize("ct", [None, "", "  ", "text/plain", "application/x-www-form-urlencoded",
                                b"text/html", "application/jsonx"])
async def test_unsupported_content_type_is_415(ct):
    e = await refused(ct, b"{}")
    assert e.status == 415 and e.error == "unsupported_media_type"


# -- multipart: content -------------------------------------------------------------------------

async def test_multipart_small_form():
    m = await parse(MULTIPART_CT, SMALL_FORM)
    assert m.text == "héllo" and m.conversation_id == "c-1"
    a, b = m.attachments
    assert (a.filename, a.mime, bytes(a.data), a.meta["n"]) == (
        "a.txt", "text/plain", b"alpha\r\n--kdc not a boundary\r\n", 1)
    assert (b.filename, b.mime, b.meta["n"]) == ("b.bin", "image/png", 2)
    assert bytes(b.data) == bytes(range(256)) + b"\r\n--" + BOUNDARY.encode()[:-1]
    assert isinstance(a.data, bytearray)


async def test_multipart_two_binary_files_one_over_a_mib_exact_bytes():
    rnd = random.Random(7)
    big = rnd.randbytes(1024 * 1024 + 12345)
    small = rnd.randbytes(777)
    ct, body = httpx_form(
        {"message": json.dumps({"message": {"text": "see files"}}),
         "attachment_meta": json.dumps([{"filename": "small.dat", "mime": "application/x-small"},
                                        {"filename": "big.dat", "mime": "image/jpeg"}])},
        [("files", ("big.dat", big, "application/octet-stream")),
         ("files", ("small.dat", small, "application/octet-stream"))])
    sizes = [rnd.randint(1, 70000) for _ in range(200)]
    m = await parse(ct, body, chunks=split(body, sizes))
    assert [(a.filename, a.mime, bytes(a.data)) for a in m.attachments] == [
        ("big.dat", "image/jpeg", big), ("small.dat", "application/x-small", small)]
    assert m.attachments[0].sha256() == __import__("hashlib").sha256(big).hexdigest()


async def test_multipart_message_as_plain_json_string_and_file_aliases():
    body = form(part("message", b'"just text"'), part("files[]", b"1", filename="x"), part("file", b"2"))
    m = await parse(MULTIPART_CT, body)
    assert m.text == "just text"
    assert [(a.filename, bytes(a.data)) for a in m.attachments] == [("x", b"1"), ("attachment-2", b"2")]


async def test_multipart_unknown_fields_ignored_but_counted():
    body = form(part("message", b'{"text": "t"}'), part("junk", b"z" * 3000), part("other", b"q", filename="q.txt"))
    m = await parse(MULTIPART_CT, body)
    assert m.attachments == [] and "junk" not in m.payload
    e = await refused(MULTIPART_CT, body, small_limits(max_total_bytes=3000))
    assert (e.status, e.limit) == (413, "MESSAGE_MAX_BYTES")


async def test_multipart_quoted_boundary_and_preamble_crlf():
    body = b"\r\n" + form(part("message", b'{"text": "q"}'))
    m = await parse(f'multipart/form-data; boundary="{BOUNDARY}"', body)
    assert m.text == "q"


async def test_multipart_epilogue_ignored():
    m = await parse(MULTIPART_CT, form(part("message", b'"e"')) + b"epilogue", chunks=[
        form(part("message", b'"e"')), b"epilogue"])
    assert m.text == "e"


async def test_multipart_without_message_is_422():
    e = await refused(MULTIPART_CT, form(part("files", b"1", filename="a")))
    assert e.status == 422


# -- multipart: chunking ------------------------------------------------------------------------

async def test_split_at_every_offset_gives_identical_results():
    expected = summary(await parse(MULTIPART_CT, SMALL_FORM))
    for i in range(len(SMALL_FORM) + 1):
        got = summary(await parse(MULTIPART_CT, SMALL_FORM, chunks=[SMALL_FORM[:i], SMALL_FORM[i:]]))
        assert got == expected, i
    one_by_one = [SMALL_FORM[i:i + 1] for i in range(len(SMALL_FORM))]
    assert summary(await parse(MULTIPART_CT, SMALL_FORM, chunks=one_by_one)) == expected


async def test_random_chunk_sizes_give_identical_results():
    expected = summary(await parse(MULTIPART_CT, SMALL_FORM))
    rnd = random.Random(1)
    for _ in range(300):
        sizes = [rnd.randint(1, 40) for _ in range(len(SMALL_FORM))]
        assert summary(await parse(MULTIPART_CT, SMALL_FORM, chunks=split(SMALL_FORM, sizes))) == expected


# -- multipart: limits while streaming ----------------------------------------------------------

async def test_oversized_part_stops_parsing_at_once():
    lim = small_limits(max_file_bytes=1000, max_total_bytes=10**9)
    head = part("message", b'"t"') + b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="files"; filename="big"\r\n\r\n'
    pulled = []

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        for i in range(10_000):
            pulled.append(i)
            yield b"x" * 100

    with pytest.raises(IngressError) as ei:
        await parse_chat_body(MULTIPART_CT, chunks(), lim)
    assert (ei.value.status, ei.value.limit) == (413, "CHAT_MAX_UPLOAD_MB") and "big" in ei.value.detail
    assert len(pulled) <= 12  # 1000 bytes + the lookbehind of a possible boundary


async def test_file_at_exact_limit_passes():
    lim = small_limits(max_file_bytes=1000)
    m = await parse(MULTIPART_CT, form(part("message", b'"t"'), part("files", b"y" * 1000, filename="f")), lim)
    assert m.attachments[0].size == 1000
    e = await refused(MULTIPART_CT, form(part("message", b'"t"'), part("files", b"y" * 1001, filename="f")), lim)
    assert (e.status, e.limit) == (413, "CHAT_MAX_UPLOAD_MB")


async def test_total_limit_while_streaming():
    lim = small_limits(max_file_bytes=1000, max_total_bytes=2500)
    files = [part("files", b"z" * 900, filename=f"f{i}") for i in range(3)]
    e = await refused(MULTIPART_CT, form(part("message", b'"t"'), *files), lim)
    assert (e.status, e.limit) == (413, "MESSAGE_MAX_BYTES")


async def test_too_many_files_while_streaming():
    lim = small_limits(max_files=2)
    files = [part("files", b"z", filename=f"f{i}") for i in range(3)]
    ok = await parse(MULTIPART_CT, form(part("message", b'"t"'), *files[:2]), lim)
    assert len(ok.attachments) == 2
    e = await refused(MULTIPART_CT, form(part("message", b'"t"'), *files), lim)
    assert (e.status, e.limit) == (413, "KDC_MAX_FILES_PER_MESSAGE")


async def test_too_many_parts():
    lim = small_limits(max_files=2)
    junk = [part(f"j{i}", b"") for i in range(30)]
    e = await refused(MULTIPART_CT, form(part("message", b'"t"'), *junk), lim)
    assert (e.status, e.limit) == (413, "KDC_MAX_FILES_PER_MESSAGE")


async def test_text_limit_in_multipart():
    e = await refused(MULTIPART_CT, form(part("message", jbody({"text": "w" * 101}))), small_limits())
    assert (e.status, e.limit) == (413, "CHAT_MAX_MESSAGE_CHARS")


async def test_epilogue_counts_toward_total():
    lim = small_limits(max_total_bytes=100)
    body = form(part("message", b'"t"'))
    e = await refused(MULTIPART_CT, body, lim, chunks=[body] + [b"e" * 50] * 3)
    assert (e.status, e.limit) == (413, "MESSAGE_MAX_BYTES")


# -- multipart: malformed -----------------------------------------------------------------------

@pytest.mark.parametrize("ct", [
    "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=" + "b" * 71,
    "multipart/form-data; boundary=a\x01b",
])
async def test_bad_boundary_parameter_is_400(ct):
    e = await refused(ct, SMALL_FORM)
    assert e.status == 400 and "boundary" in e.detail


async def test_body_with_other_boundary_is_400():
    e = await refused("multipart/form-data; boundary=somethingElse", SMALL_FORM)
    assert e.status == 400


async def test_every_truncation_is_400_or_the_whole_message():
    expected = summary(await parse(MULTIPART_CT, SMALL_FORM))
    closing = len(SMALL_FORM) - 2  # the body minus the CRLF after the closing boundary is complete
    for i in range(len(SMALL_FORM)):
        if i >= closing:
            assert summary(await parse(MULTIPART_CT, SMALL_FORM[:i])) == expected
        else:
            e = await refused(MULTIPART_CT, SMALL_FORM[:i])
            assert e.status in (400, 422), i


@pytest.mark.parametrize("body,why", [
    (form(part("message", b'{"text": "\xff"}')), "UTF-8"),
    (form(part("message", b"{nope")), "JSON"),
    (form(part("message", b'"a"'), part("message", b'"b"')), "twice"),
    (form(part("message", b'"a"'), part("attachment_meta", b"[1,")), "JSON"),
    (b"--" + BOUNDARY.encode() + b"\r\nX-Nothing: 1\r\n\r\nabc\r\n--" + BOUNDARY.encode() + b"--\r\n", "Disposition"),
    (form(part("message", b'"a"', extra_headers=["Content-Transfer-Encoding: base64"])), "Transfer"),
    (b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: attachment; name="x"\r\n\r\n1\r\n--'
     + BOUNDARY.encode() + b"--\r\n", "form-data"),
    (b"garbage" + SMALL_FORM, "malformed"),
    (b"--" + BOUNDARY.encode() + b"\r\n" + b"X-A: 1\r\n" * 9 + b"\r\n1\r\n--" + BOUNDARY.encode() + b"--\r\n",
     "malformed"),
    (b"--" + BOUNDARY.encode() + b"\r\nX-A: " + b"a" * 5000 + b"\r\n\r\n1\r\n--" + BOUNDARY.encode() + b"--\r\n",
     "malformed"),
    (b"--" + BOUNDARY.encode() + b"\r\nBad Header: 1\r\n\r\n", "malformed"),
    (b"", "truncated"),
])
async def test_malformed_multipart_is_400(body, why):
    e = await refused(MULTIPART_CT, body)
    assert e.status == 400 and why in e.detail, e


async def test_garbage_bytes_give_only_ingress_errors():
    rnd = random.Random(3)
    for _ in range(300):
        body = os.urandom(rnd.randint(0, 300)) if rnd.random() < 0.5 else _mutate(rnd, SMALL_FORM)
        sizes = [rnd.randint(1, 50) for _ in range(len(body) + 1)]
        try:
            await parse(MULTIPART_CT, body, chunks=split(body, sizes))
        except IngressError:
            pass


def _mutate(rnd: random.Random, body: bytes) -> bytes:
    b = bytearray(body)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(3)
        pos = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            del b[pos:pos + rnd.randint(1, 20)]
        elif op == 1:
            b[pos:pos] = os.urandom(rnd.randint(1, 8))
        elif b:
            b[min(pos, len(b) - 1)] = rnd.randrange(256)
    return bytes(b)
