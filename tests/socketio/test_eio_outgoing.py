"""An Engine.IO socket's outgoing frames: a bounded batch queue, overflow closes the socket."""

from __future__ import annotations

import trio
import trio.testing

from kdc_trio.server.request import Headers, Request
from kdc_trio.transports.eio_server import EIOServer, EIOSocket


def _socket(max_queue: int) -> EIOSocket:
    server = EIOServer(object(), ping_interval_ms=25_000, ping_timeout_ms=20_000, max_payload=1000,  # type: ignore[arg-type]
                       max_queue=max_queue)
    return EIOSocket(server, Request(method="GET", target="/socket.io/", headers=Headers([]), client="127.0.0.1"),
                     "websocket")


async def test_frames_go_out_as_one_batch_and_overflow_closes():
    sock = _socket(3)
    sock.send_many(["4a", "4b"])
    sock.send("4c")
    assert sock.take() == ["4a", "4b", "4c"] and sock.take() == []
    sock.send_many(["41", "42"])
    sock.send_many(["43", "44"])  # would hold 4 > 3: refused whole, the socket closes with the reason
    assert sock.close_reason == "outbox_full: more than 3 frames waiting (SSE_CLIENT_QUEUE)"
    assert sock.take() == ["41", "42"]  # what fitted is still written before the close
    sock.send("45")
    assert sock.take() == []


async def test_a_waiting_writer_wakes_on_output_on_wake_and_on_close():
    sock = _socket(10)
    woke: list[str] = []

    async def writer(tag: str) -> None:
        await sock.wait_output()
        woke.append(tag)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, "output")
        await trio.testing.wait_all_tasks_blocked()
        sock.send("4x")
        await trio.testing.wait_all_tasks_blocked()
        sock.take()
        nursery.start_soon(writer, "wake")
        await trio.testing.wait_all_tasks_blocked()
        sock.wake()
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(writer, "close")
        await trio.testing.wait_all_tasks_blocked()
        sock.close("done")
    assert woke == ["output", "wake", "close"]
