// The `ws` module as engine.io-client's Node transport imports it, with a WebSocket that also records
// the text frames it sends and receives (what a browser's network panel shows), into
// globalThis.__KDC_HARNESS_OBSERVED__.wsFrames. Bundled in place of "ws" for socket.io-client only.
import * as ws from "ws";

export class WebSocket extends ws.WebSocket {
    constructor(...args) {
        super(...args);
        const frames = globalThis.__KDC_HARNESS_OBSERVED__?.wsFrames;
        if (!frames) return;
        frames.push({dir: "open", at: Date.now(), text: String(args[0])});
        this.on("message", (data, isBinary) => {
            frames.push({dir: "in", at: Date.now(), text: isBinary ? `<binary ${data.length} bytes>` : String(data)});
        });
        const send = this.send.bind(this);
        this.send = (data, ...rest) => {
            frames.push({dir: "out", at: Date.now(), text: typeof data === "string" ? data : `<binary ${data.byteLength ?? data.length} bytes>`});
            return send(data, ...rest);
        };
    }
}

export const {WebSocketServer, createWebSocketStream} = ws;
export default WebSocket;
