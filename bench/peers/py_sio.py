"""bench peer: python-socketio 5.x AsyncServer on uvicorn doing what kdc-trio's bench bundle does.

    python3 bench/peers/py_sio.py <port> [redis-url]

A client joins the room of its session (auth.session, else a new 24-character id, as kdc-trio
makes one) and gets `session_info`; `chat_message` {message: {text: JSON {n, size, rate, broadcast, phase}}}
makes the server emit n `chat_delta` events to the socket or the session's room: kdc-trio's
envelope, built per event from chat_delta.json (bench/peers/fill.py; text "<time_ns>|" + filler).
With a Redis URL the rooms go through `AsyncRedisManager`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import socketio
import uvicorn

from bench.peers.fill import Turn, chat_delta, filler, new_session_id, phase_of

port = int(sys.argv[1])
redis_url = sys.argv[2] if len(sys.argv) > 2 else None
manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, max_http_buffer_size=10**8,
                           cors_allowed_origins=[])
app = socketio.ASGIApp(sio)
sessions: dict[str, str] = {}


@sio.event
async def connect(sid, environ, auth):
    session = (auth or {}).get("session") or new_session_id()
    sessions[sid] = session
    await sio.enter_room(sid, session)
    await sio.emit("session_info", {"session_id": session, "stream_id": sid}, to=sid)


@sio.event
async def disconnect(sid, *args):
    sessions.pop(sid, None)


@sio.on("chat_message")
async def chat_message(sid, payload):
    try:
        spec = json.loads(payload["message"]["text"])
    except (KeyError, TypeError, ValueError):
        spec = {}
    n, size, rate = int(spec.get("n", 100)), int(spec.get("size", 100)), float(spec.get("rate", 0))
    to = sessions.get(sid, sid) if spec.get("broadcast") else sid
    interval = 1 / rate if rate > 0 else 0
    turn = Turn(sessions.get(sid, sid))
    await asyncio.sleep(phase_of(spec))
    start = time.monotonic()
    for i in range(n):
        await sio.emit("chat_delta", chat_delta(turn, filler(size), i), to=to)
        if interval:
            await asyncio.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))
    await sio.emit("chat_complete", {"type": "chat.complete", "data": {"n": n}}, to=to)


if __name__ == "__main__":
    print(f"listening {port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws="wsproto")
