// The official socket.io-client on a socket opened with a short token; prints one JSON result.
// usage: node token_refresh.mjs <url> <transports> <short token> <fresh token or "-">
// With a fresh token: answers auth.expiring with auth.refresh, then sends a chat_message after the
// old deadline and waits for chat_complete. Without: waits for the server's disconnect.
import { io } from "socket.io-client";

const [url, transports, short, fresh] = process.argv.slice(2);
const out = { connected: false, services: [], refresh_ack: null, turn_ack: null, completed: false, disconnect: null };
const done = (code) => { console.log(JSON.stringify(out)); process.exit(code); };
setTimeout(() => { out.timeout = true; done(1); }, 25000);

const socket = io(url, { transports: transports.split(","), auth: { bearer_token: short }, reconnection: false });
socket.on("connect", () => { out.connected = true; });
socket.on("connect_error", (err) => { out.connect_error = err.message; done(0); });
socket.on("disconnect", (reason) => { out.disconnect = reason; if (fresh === "-") done(0); });
socket.on("chat_complete", () => { out.completed = true; out.alive_at_complete = socket.connected && out.disconnect === null; socket.disconnect(); done(0); });
socket.on("chat_service", async (env) => {
  out.services.push({ type: env.type, data: env.data });
  if (env.type === "auth.expiring" && fresh !== "-") {
    out.refresh_ack = await socket.timeout(5000).emitWithAck("auth.refresh", { bearer_token: fresh });
    const wait = Math.max(0, env.data.deadline * 1000 - Date.now()) + 1000;
    setTimeout(async () => {
      out.turn_ack = await socket.timeout(5000).emitWithAck("chat_message", { message: { text: "after the deadline" } });
    }, wait);
  }
});
