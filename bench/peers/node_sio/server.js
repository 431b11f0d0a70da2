// bench peer: socket.io 4.x doing what kdc-trio's bench bundle does.
// node server.js <port> [redis-url]
// A client joins the room of its session (auth.session, else its own id) and gets `session_info`;
// `chat_message` {message: {text: JSON {n, size, rate, broadcast}}} makes the server emit n
// `chat_delta` events (text "<time_ns>|" + filler), to the socket or to the session's room.
import { createServer } from "node:http";
import { Server } from "socket.io";

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

io.on("connection", (socket) => {
  const session = (socket.handshake.auth && socket.handshake.auth.session) || socket.id;
  socket.join(session);
  socket.emit("session_info", { session_id: session, stream_id: socket.id });
  socket.on("chat_message", async (payload) => {
    let spec = {};
    try { spec = JSON.parse(payload.message.text); } catch (e) {}
    const n = spec.n ?? 100, size = spec.size ?? 100, rate = spec.rate ?? 0;
    const target = spec.broadcast ? io.to(session) : socket;
    const interval = rate > 0 ? 1000 / rate : 0;
    const start = Date.now();
    for (let i = 0; i < n; i++) {
      const head = nsClock() + "|";
      const text = head + "x".repeat(Math.max(0, size - head.length));
      target.emit("chat_delta", { type: "chat.delta", seq: i + 1,
                                  delta: { text, index: i, marker: "answer", completed: false } });
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
