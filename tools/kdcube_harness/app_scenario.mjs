// One scenario of KDCube's chat web app (bundled store + middleware) against a kdc-trio gateway.
// Usage: node app_scenario.mjs --bundle <app.mjs> --base http://127.0.0.1:PORT --transport sse|websocket
//                              --auth anonymous|cookie|bearer [--token JWT] [--tenant T --project P]
// Drives the store as the UI does (the same actions UserInput/ChatLog dispatch) and checks what the
// app's reducers hold. Prints one JSON object: {steps: [...], observed: {...}}.
import {pathToFileURL} from "node:url";
import {closeBrowser, installBrowser, observed} from "./browser.mjs";
import {checkAttachmentsStep, DEMO, demoFiles, longText, parseArgs, sleep, Steps, waitFor} from "./common.mjs";

const args = parseArgs();
const TIMEOUT = Number(args["timeout-ms"] ?? 20000);
const auth = args.auth ?? "anonymous";

// The app's config.json, as a KDCube deployment serves it beside the app (chatSettingsSlice.ts reads it).
const chatSettings = {
    tenant: args.tenant ?? "home",
    project: args.project ?? "demo",
    auth: auth === "anonymous" ? {authType: "none"} : {authType: "hardcoded", token: args.token},
    useAuthCookies: auth !== "bearer",        // cookie: the app sets __Secure-LATC; bearer: headers/query/auth
    streamIdHeaderName: "KDC-Stream-ID",
    routesPrefix: "",
};

installBrowser({origin: args.base, staticFiles: {"/config.json": chatSettings}, verbose: args.verbose === "1"});
globalThis.__KDC_HARNESS_TRANSPORT__ = args.transport === "websocket" ? "websocket" : "sse";
const app = await import(pathToFileURL(args.bundle).href);
const {store} = app;
const state = () => store.getState();
const steps = new Steps();

const actionsSince = (mark, type) => observed.actions.slice(mark).filter((a) => a.type === type);
const popupsSince = (mark) => actionsSince(mark, "popupNotifications/pushNotification").map((a) => a.payload);

function checkDemoTurn(turnId, text, files = [], {tookFollowup = null} = {}) {
    const turn = state().chatState.turns[turnId];
    if (!turn) return [`turn ${turnId} is not in the store`];
    const problems = [];
    const errors = turn.artifacts.filter((a) => a.artifactType === "service_error").map((a) => a.content?.message);
    if (turn.state !== "finished") problems.push(`turn state is "${turn.state}"${errors.length ? `: ${errors.join("; ")}` : ""}`);
    const want = DEMO.answer(text) + (tookFollowup ? DEMO.added(tookFollowup) : "");
    if (turn.answer !== want) problems.push(`answer is ${JSON.stringify(turn.answer?.slice(-80))}, want the demo's echo`);
    const thinking = turn.artifacts.find((a) => a.artifactType === "thinking");
    if (!thinking?.content?.agents?.[DEMO.agent]?.startsWith("Reading the message.")) problems.push("no thinking artifact from the demo agent");
    for (const s of DEMO.steps) {
        if (turn.steps[s]?.status !== "completed") problems.push(`step ${s} is ${turn.steps[s]?.status ?? "missing"}`);
    }
    if (JSON.stringify(turn.followUpQuestions) !== JSON.stringify(DEMO.followups)) problems.push(`followUpQuestions ${JSON.stringify(turn.followUpQuestions)}`);
    const canvas = turn.artifacts.find((a) => a.artifactType === "canvas");
    if (!canvas) problems.push("no canvas artifact");
    else if (canvas.content.name !== DEMO.canvasName || !canvas.complete || canvas.content.contentType !== "markdown") {
        problems.push(`canvas artifact ${JSON.stringify({name: canvas.content.name, complete: canvas.complete, contentType: canvas.content.contentType})}`);
    }
    const timeline = turn.artifacts.find((a) => a.artifactType === "timeline_text");
    if (timeline?.content?.text !== DEMO.timelineText) problems.push(`timeline_text artifact ${JSON.stringify(timeline?.content)}`);
    problems.push(...checkAttachmentsStep(turn.steps.attachments_received?.data, files));
    return problems;
}

/** Types and sends as the UI does (setUserMessage, addUserAttachments, sendChatMessage); returns the turn id. */
async function send(text, files = []) {
    const before = new Set(state().chatState.turnOrder);
    if (files.length) store.dispatch(app.addUserAttachments(files.map((f) => f.file)));
    store.dispatch(app.setUserMessage(text));
    store.dispatch(app.sendChatMessage({}));
    return waitFor(() => state().chatState.turnOrder.find((id) => !before.has(id)), TIMEOUT, "the new turn in turnOrder");
}

async function waitTurnEnd(mark, turnId) {
    await waitFor(() => observed.actions.slice(mark).some((a) =>
        (a.type === "chatState/chatCompleted" && a.payload.conversation.turn_id === turnId)
        || (a.type === "chatState/turnError" && a.payload.turnId === turnId)), TIMEOUT, `chat_complete of ${turnId}`);
}

/** Quiet: no turn in progress, the last conv_status not in_progress, and no action for `quietMs`. */
async function waitQuiet(quietMs = 1000) {
    await waitFor(() => {
        const last = observed.actions.at(-1);
        const statuses = observed.actions.filter((a) => a.type === "chatState/conversationStatus");
        return !app.selectCurrentTurn(state()) && statuses.at(-1)?.payload?.data?.state !== "in_progress"
            && Date.now() - (last?.at ?? 0) > quietMs;
    }, TIMEOUT * 2, "the conversation to settle");
}

await steps.run("connect (/profile, stream)", async (notes) => {
    store.dispatch(app.loadChatSettings());
    await waitFor(() => state().auth.loggedIn, TIMEOUT, "auth.loggedIn after loadChatSettings");
    store.dispatch(app.connectChat());
    await waitFor(() => state().chatState.connected || state().userProfile.status === "failed", TIMEOUT, "chatState.connected");
    const profile = state().userProfile;
    if (profile.status === "failed") return [`/profile failed: ${profile.error}`];
    notes.push(`profile: user_type=${profile.profile?.userType} roles=${JSON.stringify(profile.profile?.roles)} session=${profile.profile?.sessionId}`);
    const opened = observed.wsFrames.find((f) => f.dir === "open");
    if (opened) notes.push(`socket.io handshake query: ${[...new URL(opened.text).searchParams].map(([k, v]) => `${k}=${k.endsWith("token") && v !== "undefined" ? "<token>" : v}`).join("&")}`);
    const problems = [];
    const wantType = auth === "anonymous" ? "anonymous" : "registered";
    if (String(profile.profile?.userType).toLowerCase() !== wantType) problems.push(`user_type ${profile.profile?.userType}, want ${wantType}`);
    return problems;
}, {required: true});

await steps.run("plain message", async () => {
    const mark = observed.actions.length;
    const text = "hello from KDCube's web app";
    const turnId = await send(text);
    await waitTurnEnd(mark, turnId);
    await sleep(200);  // trailing conv_status
    return checkDemoTurn(turnId, text);
});

await steps.run("two attachments", async () => {
    const mark = observed.actions.length;
    const text = "two files attached";
    const files = demoFiles();
    const turnId = await send(text, files);
    await waitTurnEnd(mark, turnId);
    await sleep(200);
    return checkDemoTurn(turnId, text, files);
});

await steps.run("conv_status.get", async (notes) => {
    const cid = state().chatState.conversationId;
    if (!cid) return ["no conversationId in the store"];
    const mark = observed.actions.length;
    const frameMark = observed.wsFrames.length;
    store.dispatch(app.requestConversationStatus(cid));
    if (args.transport === "websocket") {
        // SocketIOChat emits conv_status.get but binds no "conv_status" handler (socketIOChat.ts
        // bindHandlers): the answer cannot reach the reducers. Check the wire instead.
        const frame = await waitFor(() => observed.wsFrames.slice(frameMark).find((f) => f.dir === "in" && f.text.includes('"conv_status"')),
            TIMEOUT, "a conv_status frame on the socket");
        const env = JSON.parse(frame.text.slice(frame.text.indexOf("[")))[1];
        notes.push("the app binds no conv_status handler on Socket.IO: checked on the wire");
        return env?.conversation?.conversation_id === cid && env?.data?.state === "idle"
            ? [] : [`conv_status frame ${frame.text.slice(0, 200)}`];
    }
    const got = await waitFor(() => actionsSince(mark, "chatState/conversationStatus")
        .find((a) => a.payload.conversation?.conversation_id === cid), TIMEOUT, "conversationStatus for the conversation");
    notes.push(`state=${got.payload.data?.state}`);
    return got.payload.data?.state === "idle" ? [] : [`conv_status state ${got.payload.data?.state}, want idle`];
});

await steps.run("follow-up and steer during a running turn", async (notes) => {
    const mark = observed.actions.length;
    const startedAt = Date.now();
    const text = longText();
    const runningId = await send(text);
    await waitFor(() => app.selectCurrentTurn(state())?.id === runningId, TIMEOUT, "the long turn in progress (chat_start)");
    let popupMark = observed.actions.length;
    const followup = "and one more thing";
    store.dispatch(app.setUserMessage(followup));
    store.dispatch(app.sendChatMessage({}));  // a turn in progress: the middleware sends event.user.followup
    const [followupPopup] = await waitFor(() => popupsSince(popupMark).length && popupsSince(popupMark), TIMEOUT, "the follow-up's ack");
    const runningAtSteer = app.selectCurrentTurn(state())?.id === runningId;
    popupMark = observed.actions.length;
    const steer = "steer: keep it short";
    store.dispatch(app.sendChatMessage({message: steer, reactiveEventType: "event.user.steer", targetTurnId: runningId}));
    const [steerPopup] = await waitFor(() => popupsSince(popupMark).length && popupsSince(popupMark), TIMEOUT, "the steer's ack");
    await waitTurnEnd(mark, runningId);
    await waitQuiet();
    const problems = [];
    if (!runningAtSteer) problems.push("the long turn ended before the steer was sent: the step proves nothing");
    for (const [what, p] of [["follow-up", followupPopup], ["steer", steerPopup]]) {
        notes.push(`${what}: ${p.type} "${p.text}"`);
        if (p.type !== "info") problems.push(`${what} refused: ${p.text}`);
    }
    const turn = state().chatState.turns[runningId];
    // The follow-up is answered exactly once: taken by the running turn (a continuation_received step,
    // "You added: …") or run as the next turn. The steer is taken (steer_received) or told as dropped.
    const taken = turn?.steps?.continuation_received?.status === "completed";
    problems.push(...checkDemoTurn(runningId, text, [], {tookFollowup: taken ? followup : null}));
    const appended = (turn?.additionalUserMessages ?? []).map((m) => m.text);
    if (appended.length) notes.push(`appended to the running turn: ${JSON.stringify(appended)}`);
    const order = state().chatState.turnOrder;
    let ranAsTurn = 0;
    for (const id of order.slice(order.indexOf(runningId) + 1)) {
        const t = state().chatState.turns[id];
        notes.push(`next turn ${id}: ${t.state}, message ${JSON.stringify(t.userMessage.text)}, answer ${JSON.stringify(t.answer?.slice(0, 60))}`);
        if (t.answer === DEMO.answer(followup)) ranAsTurn += 1;
        problems.push(...checkDemoTurn(id, t.userMessage.text).map((p) => `next turn ${id}: ${p}`));
    }
    notes.push(taken ? "the running turn took the follow-up" : "the follow-up ran as the next turn");
    if (Number(taken) + ranAsTurn !== 1) problems.push(`the follow-up was answered ${Number(taken) + ranAsTurn} times`);
    const serviceTypes = [
        ...observed.sseEvents.filter((e) => e.at >= startedAt && e.event === "chat_service").map((e) => JSON.parse(e.data).type),
        ...observed.wsFrames.filter((f) => f.at >= startedAt && f.dir === "in" && f.text.includes('"chat_service"'))
            .map((f) => JSON.parse(f.text.slice(f.text.indexOf("[")))[1]?.type),
    ];
    if (serviceTypes.length) notes.push(`chat_service (the app only logs these): ${serviceTypes.join(", ")}`);
    const steerTaken = turn?.steps?.steer_received?.status === "completed";
    notes.push(steerTaken ? "the running turn took the steer" : "steer not taken");
    if (!steerTaken && !serviceTypes.includes("event.continuation.dropped")) problems.push("the steer was neither taken nor told as dropped");
    const statuses = args.transport === "websocket"
        ? observed.wsFrames.filter((f) => f.at >= startedAt && f.dir === "in" && f.text.includes('"conv_status"'))
            .map((f) => JSON.parse(f.text.slice(f.text.indexOf("[")))[1]?.data)
        : actionsSince(mark, "chatState/conversationStatus").map((a) => a.payload.data);
    notes.push(`conv_status: ${statuses.map((d) => d?.completion ?? d?.state).join(", ")}`);
    return problems;
});

const problemsOverall = [];
if (observed.reducerErrors.length) problemsOverall.push(...observed.reducerErrors.map((e) => `reducer threw on ${e.type}: ${e.error.split("\n")[0]}`));
problemsOverall.push(...observed.unhandled.map((e) => `unhandled: ${e.split("\n")[0]}`));
problemsOverall.push(...observed.consoleErrors.map((e) => `console.error: ${e.slice(0, 300)}`));
problemsOverall.push(...observed.consoleWarnings.filter((w) => /unknown turn|Malformed/.test(w)).map((w) => `console.warn: ${w.slice(0, 300)}`));
steps.results.push({step: "no thrown errors", ok: problemsOverall.length === 0, problems: problemsOverall, notes: [], ms: 0});

if (args.transport === "websocket") store.dispatch({type: "chatService/disconnectChat"});
closeBrowser();
process.stdout.write(JSON.stringify({
    steps: steps.results,
    observed: {
        requests: observed.requests.map((r) => `${r.method} ${r.path} ${r.status}${r.static ? " (static)" : ""}`),
        warnings: [...new Set(observed.consoleWarnings.map((w) => w.slice(0, 200)))],
    },
}) + "\n");
process.exit(0);
