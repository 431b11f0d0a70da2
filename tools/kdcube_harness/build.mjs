// Bundles KDCube's client code with esbuild for Node:
//   app.mjs      the chat web app's Redux store (app/store.ts, as the app creates it, with every slice and
//                middleware it registers) and the actions the UI dispatches;
//   sse-proto.mjs the mini app's SseChatService.
// Usage: node build.mjs --src <dir holding app/ai-app/ui> --out <dir>
// Prints a JSON manifest (outputs, the source changes applied) on stdout.
//
// The only changes to KDCube's code are the two PATCHES below; each must match exactly once, or the
// build fails (KDCube changed that code: read it again before patching anything).
import * as esbuild from "esbuild";
import {mkdirSync, writeFileSync} from "node:fs";
import {dirname, join, resolve} from "node:path";
import {fileURLToPath} from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));

const PATCHES = [
    {
        file: "chat-web-app/src/app/store.ts",
        find: 'chatServiceMiddleware("sse")',
        replace: 'chatServiceMiddleware(globalThis.__KDC_HARNESS_TRANSPORT__ ?? "sse")',
        why: "the store hard-codes the SSE transport; the Socket.IO scenario selects the app's own " +
            "\"websocket\" transport (SocketIOChat) through this global",
    },
    {
        file: "chat-web-app/src/features/chatController/socketIOChat.ts",
        find: 'this._namespace = options.namespace ?? "";',
        replace: 'this._namespace = options.namespace ?? "/";',
        why: "KDCube's namespace bug: Manager.socket(\"\") sends CONNECT for the main namespace, but the " +
            "Socket then drops every packet, because their nsp \"/\" is not its \"\"; it never sees " +
            "`connect`. The middleware passes no namespace, so the default becomes \"/\"",
    },
];

// What Vite puts in `import.meta.env` for a production build without CHAT_WEB_APP_* variables; and, as
// `vite build` does, process.env.NODE_ENV = "production" (Redux Toolkit then leaves out its
// development-only checks, as in the deployed app).
const VITE_ENV = {MODE: "production", DEV: false, PROD: true, SSR: false, BASE_URL: "/"};

function args() {
    const out = {};
    const argv = process.argv.slice(2);
    for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
    if (!out.src || !out.out) throw new Error("usage: node build.mjs --src <dir with app/ai-app/ui> --out <dir>");
    return out;
}

function patchPlugin(uiRoot, applied) {
    return {
        name: "kdcube-patches",
        setup(build) {
            for (const patch of PATCHES) {
                const path = resolve(uiRoot, patch.file);
                build.onLoad({filter: new RegExp(`${escapeRe(path)}$`)}, async () => {
                    const {readFile} = await import("node:fs/promises");
                    const text = await readFile(path, "utf8");
                    const count = text.split(patch.find).length - 1;
                    if (count !== 1) {
                        throw new Error(`patch for ${patch.file} expects exactly one \`${patch.find}\`, found ${count}`);
                    }
                    applied.push({file: patch.file, from: patch.find, to: patch.replace, why: patch.why});
                    return {contents: text.replace(patch.find, patch.replace), loader: "ts"};
                });
            }
        },
    };
}

// engine.io-client's Node WebSocket transport imports "ws": give it ws_recorder.mjs (ws, recording frames).
const wsRecorderPlugin = {
    name: "ws-recorder",
    setup(build) {
        build.onResolve({filter: /^ws$/}, (args) => (
            args.importer.includes("engine.io-client") ? {path: join(HERE, "ws_recorder.mjs")} : undefined
        ));
    },
};

function escapeRe(s) {
    return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

async function main() {
    const {src, out} = args();
    const uiRoot = resolve(src, "app/ai-app/ui");
    const app = join(uiRoot, "chat-web-app/src");
    const proto = join(uiRoot, "mini-apps/sse-proto/src");
    const entries = join(out, "entries");
    mkdirSync(entries, {recursive: true});
    writeFileSync(join(entries, "app.ts"), [
        `export {store} from ${JSON.stringify(join(app, "app/store.ts"))};`,
        `export {connectChat, sendChatMessage, requestConversationStatus} from ${JSON.stringify(join(app, "features/chat/chatServiceMiddleware.ts"))};`,
        `export {loadChatSettings} from ${JSON.stringify(join(app, "features/chat/chatSettingsSlice.ts"))};`,
        `export {setUserMessage, addUserAttachments, selectCurrentTurn} from ${JSON.stringify(join(app, "features/chat/chatStateSlice.ts"))};`,
        "",
    ].join("\n"));
    writeFileSync(join(entries, "sse-proto.ts"),
        `export {SseChatService} from ${JSON.stringify(join(proto, "sse/SseChatService.ts"))};\n`);
    const applied = [];
    const result = await esbuild.build({
        entryPoints: {app: join(entries, "app.ts"), "sse-proto": join(entries, "sse-proto.ts")},
        outdir: out,
        outExtension: {".js": ".mjs"},
        bundle: true,
        platform: "node",
        format: "esm",
        target: "node20",
        sourcemap: "inline",
        nodePaths: [join(HERE, "node_modules")],
        define: {"import.meta.env": JSON.stringify(VITE_ENV), "process.env.NODE_ENV": '"production"'},
        // esbuild's ESM output for Node needs `require` for the CommonJS packages it inlines
        banner: {js: "import {createRequire as __kdcCreateRequire} from 'node:module'; const require = __kdcCreateRequire(import.meta.url);"},
        plugins: [patchPlugin(uiRoot, applied), wsRecorderPlugin],
        logLevel: "error",
        metafile: true,
    });
    const inputs = Object.keys(result.metafile.inputs).filter((p) => !p.includes("node_modules"));
    process.stdout.write(JSON.stringify({
        outputs: {app: join(out, "app.mjs"), "sse-proto": join(out, "sse-proto.mjs")},
        patches: applied,
        kdcube_files: inputs.length,
    }) + "\n");
}

main().catch((err) => {
    process.stderr.write(`${err.stack ?? err}\n`);
    process.exit(1);
});
