// The official socket.io-client, unmodified, through a drop: one JSON line per happening on stdout.
// usage: node recovery_client.mjs <url> <auth JSON> <message text or -> [quit after N deltas]
// Sends <message text> once (none for -), on the first connect, and ends after chat_complete, after
// N chat_deltas when given, or after 60 s.
// Lines: {t:"connect", recovered, id, at} {t:"disconnect", reason, at}
//        {t:"event", event, seq, offset, at} (offset: the last argument when it is a string)
//        {t:"ack", ack} {t:"done", reason}
import { io } from "socket.io-client";

const [url, authJson, text, quitAfter] = process.argv.slice(2);
const line = (o) => process.stdout.write(JSON.stringify({ ...o, at: Date.now() }) + "\n");
const finish = (reason, code) => { line({ t: "done", reason }); socket.disconnect(); setTimeout(() => process.exit(code), 50); };
setTimeout(() => finish("timeout", 1), 60000);

const socket = io(url, { transports: ["websocket"], auth: JSON.parse(authJson), reconnectionDelay: 100,
  reconnectionDelayMax: 300, randomizationFactor: 0 });
let sent = false;
let deltasLeft = Number(quitAfter || 0);
socket.on("connect", () => {
  line({ t: "connect", recovered: socket.recovered, id: socket.id });
  if (!sent && text !== "-") {
    sent = true;
    socket.emit("chat_message", { message: { text } }, (ack) => line({ t: "ack", ack }));
  }
});
socket.on("disconnect", (reason) => line({ t: "disconnect", reason }));
socket.on("connect_error", (err) => line({ t: "connect_error", message: err.message }));
socket.onAny((event, ...args) => {
  const last = args[args.length - 1];
  const data = args[0] || {};
  line({ t: "event", event, seq: data.seq ?? null, offset: typeof last === "string" ? last : null,
         nargs: args.length, type: data.type ?? null, text: data.delta?.text ?? null });
  if (event === "chat_complete") finish("complete", 0);
  else if (event === "chat_delta" && quitAfter && --deltasLeft === 0) finish("quit", 0);
});
