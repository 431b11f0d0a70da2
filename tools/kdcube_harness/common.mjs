// Shared by the scenario scripts: arguments, waiting, the step runner and what the demo bundle streams.
import {createHash} from "node:crypto";

export function parseArgs(argv = process.argv.slice(2)) {
    const out = {};
    for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
    return out;
}

export class Timeout extends Error {}

export async function waitFor(predicate, timeoutMs, what) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const value = predicate();
        if (value) return value;
        if (Date.now() > deadline) throw new Timeout(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
    }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs named steps in order; a step returns a list of problems (empty: passed) and may add notes. */
export class Steps {
    constructor() {
        this.results = [];
        this.blocked = null;
    }

    async run(name, fn, {required = false} = {}) {
        if (this.blocked) {
            this.results.push({step: name, ok: false, problems: [`not run: ${this.blocked}`], notes: [], ms: 0});
            return;
        }
        const started = Date.now();
        const notes = [];
        let problems;
        try {
            problems = (await fn(notes)) ?? [];
        } catch (err) {
            problems = [err instanceof Error ? `${err instanceof Timeout ? "" : `${err.name}: `}${err.message}` : String(err)];
        }
        this.results.push({step: name, ok: problems.length === 0, problems, notes, ms: Date.now() - started});
        if (required && problems.length) this.blocked = `"${name}" failed`;
    }
}

export const sha256hex = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** Two attachments, as a user would pick them: a text file and binary bytes (every byte value). */
export function demoFiles() {
    const text = new TextEncoder().encode("KDCube harness attachment: plain text, ünïcødé.\n");
    const binary = new Uint8Array(1024);
    for (let i = 0; i < binary.length; i++) binary[i] = i % 256;
    return [
        {name: "notes.txt", type: "text/plain", bytes: text},
        {name: "blob.bin", type: "application/octet-stream", bytes: binary},
    ].map((f) => ({...f, sha256: sha256hex(f.bytes), file: new File([f.bytes], f.name, {type: f.type})}));
}

// What kdc_trio/bundles/demo.py streams for a message.
export const DEMO = {
    agent: "demo",
    answer: (text) => (text ? `You said: ${text}` : "You sent no text."),
    added: (followup) => `\n\nYou added: ${followup}`,  // a follow-up the running turn took
    followups: ["Tell me more", "Send a file", "Start over"],
    canvasName: "echo.md",
    timelineText: "Echoed the message",
    steps: ["attachments_received", "thinking", "followups"],
};

/** A long message: the demo bundle streams its answer for a second or more, time to follow up and steer. */
export function longText(words = 600) {
    return Array.from({length: words}, (_, i) => `word${i}`).join(" ");
}

/** Checks the sha256s the demo's `attachments_received` step reports against the files sent. */
export function checkAttachmentsStep(stepData, files) {
    const problems = [];
    const got = Array.isArray(stepData?.attachments) ? stepData.attachments : null;
    if (!got) return [`attachments_received step has no data.attachments (data: ${JSON.stringify(stepData)?.slice(0, 200)})`];
    if (got.length !== files.length) problems.push(`attachments_received lists ${got.length} attachment(s), sent ${files.length}`);
    for (const f of files) {
        const match = got.find((a) => a.filename === f.name);
        if (!match) problems.push(`attachment ${f.name} missing from attachments_received`);
        else if (match.sha256 !== f.sha256) problems.push(`${f.name}: sha256 ${match.sha256} != sent ${f.sha256}`);
        else if (match.size !== f.bytes.length) problems.push(`${f.name}: size ${match.size} != ${f.bytes.length}`);
    }
    return problems;
}
