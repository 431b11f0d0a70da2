"""The process's budget for request bodies in flight (KDC_MAX_BODY_BYTES_IN_FLIGHT), from raw
sockets: a body that does not fit while others are arriving gets 503 + Retry-After at once
(declared or chunked), a body larger than the whole budget 413, and every reservation is given
back when its request ends — answered, refused, or abandoned mid-body."""

from __future__ import annotations

import trio

from tests.server.raw import Response, connect, exchange, read_response, send, serving
from tests.server.test_statuses import error_router

KIB = 1024


def assert_refused(r: Response, status: int, error: str) -> None:
    """The budget's refusal: JSON {error, detail, limit} naming the setting."""
    assert r.status == status, r
    body = r.json()
    assert body["error"] == error and body["limit"] == "KDC_MAX_BODY_BYTES_IN_FLIGHT", body
    assert "KDC_MAX_BODY_BYTES_IN_FLIGHT" in body["detail"]
    assert r.headers["connection"] == "close"


def post(n: int, body: bytes = b"") -> bytes:
    return f"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n".encode() + body


async def wait_in_use(server, n: int) -> None:
    with trio.fail_after(5):
        while server.body_budget.in_use != n:
            await trio.sleep(0.01)


async def test_bodies_past_the_budget_get_503_and_reservations_come_back():
    async with serving(error_router(), max_body_bytes=80 * KIB, max_body_bytes_in_flight=100 * KIB) as (server, port):
        slow = await connect(port)
        await send(slow, post(60 * KIB, b"a" * (30 * KIB)))  # half its body: 60 KiB reserved
        await wait_in_use(server, 60 * KIB)
        busy = await exchange(port, post(60 * KIB, b"b" * (60 * KIB)))
        chunked = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 + b"".join(b"2800\r\n" + b"c" * (10 * KIB) + b"\r\n" for _ in range(5)) + b"0\r\n\r\n")
        small = await exchange(port, post(10 * KIB, b"d" * (10 * KIB)))  # fits beside the slow one
        await send(slow, b"a" * (30 * KIB))
        done = await read_response(slow, method="POST")
        await slow.aclose()
        await wait_in_use(server, 0)
        again = await exchange(port, post(60 * KIB, b"b" * (60 * KIB)))
        await wait_in_use(server, 0)
        peak = server.body_budget.peak
    assert_refused(busy, 503, "body_budget_exhausted")
    assert busy.headers["retry-after"] == "1"
    assert_refused(chunked, 503, "body_budget_exhausted")
    assert small.status == 200 and done.status == 200 and len(done.body) == 60 * KIB
    assert again.status == 200
    assert peak <= 100 * KIB


async def test_a_body_larger_than_the_whole_budget_is_413():
    async with serving(error_router(), max_body_bytes=500 * KIB, max_body_bytes_in_flight=100 * KIB) as (server, port):
        r = await exchange(port, post(200 * KIB))
    assert_refused(r, 413, "payload_too_large")


async def test_an_abandoned_body_gives_its_reservation_back():
    async with serving(error_router(), max_body_bytes_in_flight=100 * KIB, read_timeout_s=5) as (server, port):
        stream = await connect(port)
        await send(stream, post(50 * KIB, b"x" * KIB))
        await wait_in_use(server, 50 * KIB)
        await stream.aclose()  # the client goes away mid-body
        await wait_in_use(server, 0)
