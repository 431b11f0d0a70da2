"""Every JSON a client sends is decoded with one nesting limit (protocol/jsonbound.py): a body
nested 2,000 deep (a RecursionError 500 before) or just past the limit is a 400 with our error,
on /sse/conv_status.get, /sse/chat as JSON and in multipart parts; just under the limit parses."""

from __future__ import annotations

import json

import httpx
import pytest

from protocol.jsonbound import MAX_NESTING, JSONNestingError, loads
from tests.support.gateway import running_gateway


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("depth", [2000, MAX_NESTING + 1])
async def test_deep_json_bodies_are_400_not_500(depth):
    deep = nested(depth)
    async with running_gateway(with_worker=False) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as c:
        status_get = await c.post("/sse/conv_status.get", content=f'{{"conversation_id": {deep}}}',
                                  headers={"content-type": "application/json"})
        chat_json = await c.post("/sse/chat?stream_id=s", content=f'{{"text": "hi", "x": {deep}}}',
                                 headers={"content-type": "application/json"})
        chat_form = await c.post("/sse/chat?stream_id=s", files={"message": (None, f'{{"text": "hi", "x": {deep}}}')})
        meta_str = await c.post("/sse/chat?stream_id=s", json={"text": "hi", "attachment_meta": deep})
        alive = await c.get("/health")
    for r in (status_get, chat_json, chat_form, meta_str):
        assert r.status_code == 400, (r.status_code, r.text)
        body = r.json()
        assert body["error"] == "bad_request", body
        assert "nested deeper than" in body["detail"], body
    assert alive.status_code == 200


def test_loads_limit_edges():
    assert loads(nested(MAX_NESTING)) is not None
    assert loads(json.dumps({"a": [[{"b": 1}]]}).encode()) == {"a": [[{"b": 1}]]}
    for bad in (nested(MAX_NESTING + 1), nested(5000), '{"a":' * 3000, nested(MAX_NESTING + 1).encode()):
        with pytest.raises(JSONNestingError):
            loads(bad)
    # brackets inside strings do not count against the limit
    assert loads(json.dumps(["[" * 5000])) == ["[" * 5000]
    with pytest.raises(ValueError):
        loads("[" * 10)  # truncated: a JSONDecodeError, still a ValueError


async def test_numbers_too_long_for_int_are_400_not_500():
    # Found by bench/fuzz (sse): json.loads raises a bare ValueError for integers over 4,300
    # digits; /sse/chat answered 500.
    huge = "4" * 12000
    async with running_gateway(with_worker=False) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as c:
        bare = await c.post("/sse/chat?stream_id=s", content=huge, headers={"content-type": "application/json"})
        inner = await c.post("/sse/chat?stream_id=s", content=f'{{"text": "hi", "x": {huge}}}',
                             headers={"content-type": "application/json"})
        form = await c.post("/sse/chat?stream_id=s", files={"message": (None, f'{{"text": {huge}}}')})
    for r in (bare, inner, form):
        assert r.status_code == 400, (r.status_code, r.text)
        assert r.json()["error"] == "bad_request"
    with pytest.raises(json.JSONDecodeError):
        loads(huge)
