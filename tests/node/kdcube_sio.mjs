// KDCube's chat web app Socket.IO path, as its socketIOChat.ts / chatBase.ts do it, with the official
// socket.io-client: GET /profile for the session id, a Manager on /socket.io (websocket first, no
// upgrade, credentials), auth {user_session_id, project, tenant} also copied into the handshake query,
// then emitWithAck("chat_message", eventSubmission, ...ArrayBuffers) and assertChatSubmitAccepted.
// usage: node kdcube_sio.mjs <url> <tenant> <project>; prints one JSON result.
import { Manager } from "socket.io-client";
import { createHash, randomBytes, randomUUID } from "node:crypto";

const [url, tenant, project] = process.argv.slice(2);
const out = { profile: null, session_info: null, ack: null, rejected: null, events: [], sent: {} };
const done = (code) => { console.log(JSON.stringify(out)); process.exit(code); };
setTimeout(() => { out.timeout = true; done(1); }, 20000);

const files = [{ name: "a.pdf", type: "application/pdf", data: randomBytes(70000) },
               { name: "b.txt", type: "text/plain", data: Buffer.from("bee") }];
for (const f of files) out.sent[f.name] = createHash("sha256").update(f.data).digest("hex");

function buildEventSubmission(text, turnId) {  // chatBase.buildEventSubmission
  const events = [{ event_id: randomUUID(), type: "event.user.prompt", event_source_id: "chat.message", reactive: true,
                    payload: { mime: "text/plain", event: { text } } }];
  files.forEach((file, index) => events.push({
    event_id: randomUUID(), type: "event.user.attachment.file", event_source_id: "chat.attachment", reactive: true,
    payload: { mime: file.type, event: { filename: file.name, size: file.data.length, mime: file.type, file_index: index } } }));
  return { external_events: events, chat_history: [], project, tenant, turn_id: turnId };
}

function assertChatSubmitAccepted(ack) {
  if (ack && ack.ok === false) throw new Error(ack.error || "Chat request was rejected");
  return ack;
}

out.profile = await (await fetch(`${url}/profile`, { credentials: "include" })).json();
const manager = new Manager(url, { path: "/socket.io", transports: ["websocket", "polling"], upgrade: false,
                                   autoConnect: false, withCredentials: true, reconnection: false });
const socket = manager.socket("/", { auth: {} });
const authPayload = { user_session_id: out.profile.session_id, project, tenant };
socket.auth = authPayload;
socket.io.opts.query = { ...socket.io.opts?.query, ...authPayload };
socket.onAny((event, data) => {
  out.events.push({ event, data });
  if (event === "conv_status" && data.data.state === "idle" && out.events.some((e) => e.event === "chat_complete")) {
    socket.disconnect();
    done(0);
  }
});
socket.on("connect_error", (err) => { out.connect_error = err.message; done(1); });
socket.on("session_info", async (info) => {
  out.session_info = info;
  try {
    await socket.emitWithAck("chat_message", { external_events: "not a list", turn_id: "turn-bad" })
      .then(assertChatSubmitAccepted);
  } catch (err) { out.rejected = err.message; }
  const buffers = await Promise.all(files.map((f) => new Blob([f.data]).arrayBuffer()));
  out.ack = assertChatSubmitAccepted(await socket.emitWithAck("chat_message",
    buildEventSubmission("from KDCube's socket path", "turn_2026-11-30-17-00-00-001"), ...buffers));
  socket.emit("conv_status.get", { conversation_id: out.ack.conversation_id });  // no ack, as the app does
});
socket.connect();
