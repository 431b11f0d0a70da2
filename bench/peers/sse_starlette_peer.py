"""bench peer: sse-starlette on uvicorn doing what kdc-trio's bench bundle does over SSE.

    python3 bench/peers/sse_starlette_peer.py <port> [redis-url]

GET /sse/stream?stream_id=…[&session=…] opens a stream (first event `ready` {session_id});
POST /sse/chat?stream_id=…&session=… with {"message": {"text": JSON {n, size, rate, broadcast, phase}}}
makes the server emit n `chat_delta` events (kdc-trio's envelope, built per event from
chat_delta.json by bench/peers/fill.py; text "<time_ns>|" + filler; the SSE `id:` its seq, as
kdc-trio's) to that stream or to every stream of the session. With a Redis URL events go through one redis.asyncio pub/sub
channel per session (each stream subscribes), as a typical deployment of it does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.peers.fill import Turn, chat_delta, filler, new_session_id, phase_of

port = int(sys.argv[1])
redis_url = sys.argv[2] if len(sys.argv) > 2 else None
redis = None
if redis_url:
    import redis.asyncio as aioredis

    redis = aioredis.Redis.from_url(redis_url)
QUEUE = 100_000
SUBSCRIBE_TIMEOUT_S = 30  # Redis confirms in a millisecond; a loaded CI box may take seconds
streams: dict[str, dict[str, asyncio.Queue]] = {}  # session → stream id → queue


async def stream(request: Request):
    stream_id = request.query_params.get("stream_id") or str(time.monotonic_ns())
    session = request.query_params.get("session") or new_session_id()
    queue: asyncio.Queue = asyncio.Queue(QUEUE)
    streams.setdefault(session, {})[stream_id] = queue

    async def events():
        pubsub = None
        try:
            if redis is not None:
                # Subscribed (Redis confirmed it) before `ready`: the load generator triggers the
                # turn as soon as it reads `ready`, and a message published before the SUBSCRIBE
                # is lost (once the cause of a quick bench run that waited out its timeout).
                pubsub = redis.pubsub()
                await pubsub.subscribe(f"bench:{session}")
                reply = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
                if reply is None or reply["type"] != "subscribe":
                    raise RuntimeError(f"SUBSCRIBE bench:{session} not confirmed within {SUBSCRIBE_TIMEOUT_S} s: {reply}")
            yield {"event": "ready", "data": json.dumps({"session_id": session, "stream_id": stream_id})}
            if pubsub is None:
                while True:
                    yield await queue.get()
            else:
                async for msg in pubsub.listen():
                    if msg["type"] == "message":
                        item = json.loads(msg["data"])
                        if item.get("target") in (None, stream_id):
                            yield {"event": item["event"], "data": item["data"], "id": item.get("id")}
        finally:
            streams.get(session, {}).pop(stream_id, None)
            if pubsub is not None:
                await pubsub.aclose()

    return EventSourceResponse(events(), sep="\n", ping=15)


async def produce(session: str, stream_id: str, spec: dict) -> None:
    n, size, rate = int(spec.get("n", 100)), int(spec.get("size", 100)), float(spec.get("rate", 0))
    broadcast = bool(spec.get("broadcast"))
    interval = 1 / rate if rate > 0 else 0
    turn = Turn(session)
    await asyncio.sleep(phase_of(spec))
    start = time.monotonic()
    for i in range(n + 1):
        if i < n:
            envelope = chat_delta(turn, filler(size), i)
            event, data, seq = "chat_delta", json.dumps(envelope, separators=(",", ":")), str(envelope["seq"])
        else:
            event, data, seq = "chat_complete", json.dumps({"type": "chat.complete", "data": {"n": n}}), None
        if redis is not None:
            await redis.publish(f"bench:{session}", json.dumps(
                {"event": event, "data": data, "id": seq, "target": None if broadcast else stream_id}))
        else:
            targets = streams.get(session, {})
            for sid, q in list(targets.items()):
                if broadcast or sid == stream_id:
                    q.put_nowait({"event": event, "data": data, "id": seq})
            await asyncio.sleep(0)
        if interval:
            await asyncio.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))


async def chat(request: Request):
    body = await request.json()
    spec = json.loads(body["message"]["text"])
    stream_id = request.query_params["stream_id"]
    session = request.query_params.get("session") or stream_id
    asyncio.get_running_loop().create_task(produce(session, stream_id, spec))
    return JSONResponse({"status": "processing_started"}, status_code=202)


app = Starlette(routes=[Route("/sse/stream", stream), Route("/sse/chat", chat, methods=["POST"])])

if __name__ == "__main__":
    print(f"listening {port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
