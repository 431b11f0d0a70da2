// KDCube's mini app client, SseChatService (mini-apps/sse-proto), against a kdc-trio gateway: connect
// (/profile, then /sse/stream), a plain message and two attachments, sent as its App.tsx sends them
// (its older `{message: {message: …}}` body, `attachment_meta`, a client-chosen conversation_id).
// Usage: node proto_scenario.mjs --bundle <sse-proto.mjs> --base URL [--token JWT]
import {randomUUID} from "node:crypto";
import {pathToFileURL} from "node:url";
import {closeBrowser, installBrowser, observed} from "./browser.mjs";
import {checkAttachmentsStep, DEMO, demoFiles, parseArgs, Steps, waitFor} from "./common.mjs";

const args = parseArgs();
const TIMEOUT = Number(args["timeout-ms"] ?? 20000);
installBrowser({origin: args.base, verbose: args.verbose === "1"});
const {SseChatService} = await import(pathToFileURL(args.bundle).href);

const svc = new SseChatService({
    baseUrl: args.base, tenant: args.tenant ?? "home", project: args.project ?? "demo",
    authToken: args.token || undefined,
});
const envelopes = [];
const handlerErrors = [];
const keep = (family) => (env) => envelopes.push({family, env});
const handlers = {
    onReady: keep("ready"),
    onChatStart: keep("chat_start"),
    onChatStep: keep("chat_step"),
    onChatDelta: keep("chat_delta"),
    onChatComplete: keep("chat_complete"),
    onChatError: keep("chat_error"),
    onConvStatus: keep("conv_status"),
    onError: (e) => handlerErrors.push(String(e?.message ?? e?.type ?? e)),
};
const conversationId = randomUUID();  // as App.tsx: useState(uuidv4())
const steps = new Steps();

const ofTurn = (turnId, family) => envelopes.filter((e) => e.family === family && e.env.conversation?.turn_id === turnId).map((e) => e.env);

function checkTurn(turnId, text, files = []) {
    const problems = [];
    const deltas = ofTurn(turnId, "chat_delta");
    const byMarker = (m) => deltas.filter((d) => d.delta?.marker === m);
    const answer = byMarker("answer").map((d) => d.delta.text).join("");
    if (answer !== DEMO.answer(text)) problems.push(`answer ${JSON.stringify(answer.slice(0, 80))}`);
    if (!byMarker("thinking").length) problems.push("no thinking deltas");
    const canvas = byMarker("canvas")[0];
    if (canvas?.extra?.artifact_name !== DEMO.canvasName) problems.push(`canvas delta extra ${JSON.stringify(canvas?.extra)}`);
    if (byMarker("timeline_text")[0]?.delta?.text !== DEMO.timelineText) problems.push("no timeline_text delta");
    const missingExtra = deltas.filter((d) => !d.extra || typeof d.extra !== "object").length;
    if (missingExtra) problems.push(`${missingExtra} chat_delta(s) without extra`);
    const stepsSeen = ofTurn(turnId, "chat_step");
    const followups = stepsSeen.find((s) => s.event?.step === "followups");
    if (JSON.stringify(followups?.data?.items) !== JSON.stringify(DEMO.followups)) problems.push("no followups step with the demo's items");
    problems.push(...checkAttachmentsStep(stepsSeen.find((s) => s.event?.step === "attachments_received")?.data, files));
    const bad = envelopes.filter((e) => e.env.conversation?.conversation_id && e.env.conversation.conversation_id !== conversationId && e.family !== "ready");
    if (bad.length) problems.push(`events for another conversation: ${bad[0].env.conversation.conversation_id}`);
    return problems;
}

async function sendAndWait(text, files) {
    const ack = await svc.sendChatMessage({message: text, chat_history: [], conversation_id: conversationId}, files?.map((f) => f.file));
    if (ack.conversation_id !== conversationId) throw new Error(`ack conversation_id ${ack.conversation_id}, sent ${conversationId}`);
    await waitFor(() => ofTurn(ack.turn_id, "chat_complete").length || ofTurn(ack.turn_id, "chat_error").length,
        TIMEOUT, `chat_complete of ${ack.turn_id}`);
    const err = ofTurn(ack.turn_id, "chat_error")[0];
    if (err) throw new Error(`chat_error: ${JSON.stringify(err.data)}`);
    return ack.turn_id;
}

await steps.run("connect (/profile, stream)", async (notes) => {
    const profile = await svc.fetchProfile();
    notes.push(`profile: user_type=${profile.user_type} session=${profile.session_id}`);
    await svc.connect(handlers);
    const ready = await waitFor(() => envelopes.find((e) => e.family === "ready"), TIMEOUT, "ready");
    const problems = [];
    if (ready.env.session_id !== profile.session_id) problems.push(`ready.session_id ${ready.env.session_id} != /profile's ${profile.session_id}`);
    if (typeof ready.env.timestamp !== "string" || Number.isNaN(Date.parse(ready.env.timestamp))) problems.push(`ready.timestamp ${ready.env.timestamp} is not ISO-8601`);
    return problems;
}, {required: true});

await steps.run("plain message", async () => {
    const text = "hello from KDCube's sse-proto";
    return checkTurn(await sendAndWait(text), text);
});

await steps.run("two attachments", async () => {
    const text = "two files attached";
    const files = demoFiles();
    return checkTurn(await sendAndWait(text, files), text, files);
});

const overall = [...handlerErrors.map((e) => `EventSource error: ${e}`), ...observed.unhandled, ...observed.consoleErrors];
steps.results.push({step: "no thrown errors", ok: overall.length === 0, problems: overall, notes: [], ms: 0});
svc.disconnect();
closeBrowser();
process.stdout.write(JSON.stringify({
    steps: steps.results,
    observed: {requests: observed.requests.map((r) => `${r.method} ${r.path} ${r.status}`), warnings: observed.consoleWarnings},
}) + "\n");
process.exit(0);
