// bench peer: socket.io 4.x doing what kdc-trio's bench bundle does.
// node server.js <port> [redis-url]
// A client joins the room of its session (auth.session, else a new 24-character id, as kdc-trio
// makes one) and gets `session_info`; `chat_message` {message: {text: JSON {n, size, rate, broadcast, phase}}}
// makes the server emit n `chat_delta` events, the first `phase` seconds after the message (`many`
// spreads its sessions' first events over one period), to the socket or to the session's room. Joined to
// Redis, every event goes to the session's room: the redis adapter then publishes it (a socket's own
// `emit` never reaches Redis, so a run "through Redis" would do no Redis work at all, where
// kdc-trio's events all pass through Redis). The room holds the socket: delivery is the same. Each is the
// KDCube envelope kdc-trio emits: built per event from ../chat_delta.json (written by
// `python3 -m bench.peers.template` from protocol/envelope.py) with the fields kdc-trio fills per
// event (timestamp, ts, delta.text = "<time_ns>|" + filler to size, index, idx, seq).
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { Server } from "socket.io";

const TPL = JSON.parse(readFileSync(new URL("../chat_delta.json", import.meta.url), "utf8")).envelope;
const port = Number(process.argv[2]);
const redisUrl = process.argv[3];
const httpServer = createServer();
const io = new Server(httpServer, { maxHttpBufferSize: 1e8, pingInterval: 25000, pingTimeout: 20000 });

if (redisUrl) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

const nsClock = (() => {
  // wall-clock nanoseconds with sub-ms resolution: anchor hrtime to Date.now() once
  const anchorWall = BigInt(Date.now()) * 1000000n;
  const anchorHr = process.hrtime.bigint();
  return () => (anchorWall + (process.hrtime.bigint() - anchorHr)).toString();
})();
const newId = (prefix) => `${prefix}-${randomBytes(8).toString("hex")}`;
const seqs = new Map(); // session → last sequence number (kdc-trio's relay numbers a session's events)

function chatDelta(turn, text, index) {
  const ms = Date.now();
  const seq = (seqs.get(turn.session) || 0) + 1;
  seqs.set(turn.session, seq);
  return {
    ...TPL, timestamp: new Date(ms).toISOString(), ts: ms,
    service: { ...TPL.service, request_id: turn.requestId },
    conversation: { ...TPL.conversation, session_id: turn.session, conversation_id: turn.conversationId,
                    turn_id: turn.turnId },
    event: { ...TPL.event }, extra: {}, delta: { ...TPL.delta, text, index }, text, idx: index, seq,
  };
}

io.on("connection", (socket) => {
  const session = (socket.handshake.auth && socket.handshake.auth.session) || randomBytes(18).toString("base64url");
  socket.join(session);
  socket.emit("session_info", { session_id: session, stream_id: socket.id });
  socket.on("chat_message", async (payload) => {
    let spec = {};
    try { spec = JSON.parse(payload.message.text); } catch (e) {}
    const n = spec.n ?? 100, size = spec.size ?? 100, rate = spec.rate ?? 0;
    const target = spec.broadcast || redisUrl ? io.to(session) : socket;
    const turn = { session, requestId: newId("req"), conversationId: newId("conv"), turnId: newId("turn") };
    const interval = rate > 0 ? 1000 / rate : 0;
    const phase = Math.min(60, Math.max(0, Number(spec.phase) || 0)); // s before the first event
    if (phase > 0) await new Promise((r) => setTimeout(r, phase * 1000));
    const start = Date.now();
    for (let i = 0; i < n; i++) {
      const head = nsClock() + "|";
      target.emit("chat_delta", chatDelta(turn, head + "x".repeat(Math.max(0, size - head.length)), i));
      if (interval) {
        const wait = start + (i + 1) * interval - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      } else if (i % 64 === 63) {
        await new Promise((r) => setImmediate(r));
      }
    }
    target.emit("chat_complete", { type: "chat.complete", data: { n } });
  });
});

httpServer.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
