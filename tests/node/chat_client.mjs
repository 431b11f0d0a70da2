// Drives the official socket.io-client against a kdc-trio gateway; prints one JSON result.
// usage: node chat_client.mjs <url> <transports comma-separated> <auth JSON> <text> <file sizes comma-separated>
import { io } from "socket.io-client";
import { createHash, randomBytes } from "node:crypto";

const [url, transports, authJson, text, sizes] = process.argv.slice(2);
const files = (sizes || "").split(",").filter(Boolean).map((n, i) => ({ name: `f${i}.bin`, data: randomBytes(Number(n)) }));
const out = { connected: false, connect_error: null, session_info: null, ack: null, events: [], transport: null,
  sent: files.map((f) => ({ filename: f.name, sha256: createHash("sha256").update(f.data).digest("hex") })) };
const done = (code) => { console.log(JSON.stringify(out)); process.exit(code); };
setTimeout(() => { out.timeout = true; done(1); }, 20000);

// A refused message (ack ok: false) ends the run once the refusal's notice reached the stream too
// (a chat_service gateway.* event, or chat_error).
const endIfRefused = () => {
  if (out.ack?.ok !== false) return;
  if (out.events.some((e) => e.event === "chat_error" || (e.event === "chat_service" && String(e.data?.type).startsWith("gateway.")))) {
    socket.disconnect();
    done(0);
  }
};
const socket = io(url, { transports: transports.split(","), auth: JSON.parse(authJson), reconnection: false });
socket.on("connect_error", (err) => { out.connect_error = { message: err.message, data: err.data ?? null }; done(0); });
socket.onAny((event, data) => {
  out.events.push({ event, data });
  if (event === "session_info") {
    out.session_info = data;
    out.connected = true;
    if (text === "-") { out.transport = socket.io.engine.transport.name; socket.disconnect(); done(0); }
    const payload = { message: { text }, attachment_meta: files.map((f) => ({ filename: f.name, mime: "application/octet-stream" })) };
    socket.emit("chat_message", payload, ...files.map((f) => f.data), (ack) => { out.ack = ack; endIfRefused(); });
  }
  endIfRefused();
  if (event === "conv_status" && data.data.state === "idle" && out.events.some((e) => e.event === "chat_complete")) {
    out.transport = socket.io.engine.transport.name;
    socket.disconnect();
    done(0);
  }
});
