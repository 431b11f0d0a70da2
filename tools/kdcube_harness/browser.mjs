// Browser stand-ins for running KDCube's web app code in Node, and only those:
//   - `window` (= globalThis, as in a browser) with `location` at the page origin;
//   - `document.cookie` backed by a cookie jar that fetch and EventSource share (a browser's cookie
//     store: cookies the page sets and Set-Cookie from responses, sent on same-origin requests and
//     on `credentials: "include"`); `document.body`/`createElement`/`getComputedStyle` stubs,
//     because components/shared.ts reads the body's font size at import time;
//   - `localStorage`/`sessionStorage` (in-memory Storage);
//   - `fetch`: Node's fetch, plus what a page's fetch does that Node's does not: relative URLs resolve
//     against the page, cookies go out and come back. `/config.json` is answered from the scenario's
//     config, as the web host that serves the single-page app would serve it; everything else goes to
//     the gateway under test;
//   - `EventSource`: the `eventsource` package, fetching through the same page fetch (cookies);
//   - the Redux DevTools extension hook (`window.__REDUX_DEVTOOLS_EXTENSION_COMPOSE__`), which the
//     app's `configureStore({devTools: true})` picks up as a browser with the extension would: it
//     records every action that reaches the reducers and every error a reducer throws, and changes
//     nothing else.
// Node already has File, Blob, FormData, Headers, crypto.randomUUID, URL and timers.
import {EventSource as NodeEventSource} from "eventsource";

export const observed = {
    requests: [],        // {method, path, status}
    actions: [],         // {type, at, payload?} of every action the reducers saw
    reducerErrors: [],   // {type, error}
    consoleErrors: [],
    consoleWarnings: [],
    unhandled: [],
    sseEvents: [],       // {event, at}
    eventSources: [],
    wsFrames: [],        // Socket.IO text frames, {dir, at, text} (ws_recorder.mjs)
};
globalThis.__KDC_HARNESS_OBSERVED__ = observed;

const KEEP_PAYLOAD = /chatState\/(chatStarted|chatCompleted|conversationStatus|turnError|newTurn)|popupNotifications\//;

class CookieJar {
    constructor() {
        this.cookies = new Map();  // name -> {value, httpOnly, expires}
    }

    setFromString(header, {fromScript}) {
        const [pair, ...attrs] = header.split(";");
        const eq = pair.indexOf("=");
        if (eq < 0) return;
        const name = decodeURIComponent(pair.slice(0, eq).trim());
        const value = decodeURIComponent(pair.slice(eq + 1).trim());
        let expires = null;
        let httpOnly = false;
        for (const attr of attrs) {
            const [k, v] = attr.trim().split("=");
            const key = k.toLowerCase();
            if (key === "expires") expires = Date.parse(v);
            if (key === "max-age") expires = Date.now() + Number(v) * 1000;
            if (key === "httponly") httpOnly = true;
        }
        if (fromScript && this.cookies.get(name)?.httpOnly) return;  // scripts cannot overwrite HttpOnly
        if (expires !== null && expires <= Date.now()) {
            this.cookies.delete(name);
            return;
        }
        this.cookies.set(name, {value, httpOnly: httpOnly && !fromScript});
    }

    header({forScript}) {
        return [...this.cookies.entries()]
            .filter(([, c]) => !(forScript && c.httpOnly))
            .map(([n, c]) => `${encodeURIComponent(n)}=${encodeURIComponent(c.value)}`)
            .join("; ");
    }
}

class MemoryStorage {
    constructor() { this.map = new Map(); }
    get length() { return this.map.size; }
    key(i) { return [...this.map.keys()][i] ?? null; }
    getItem(k) { return this.map.has(k) ? this.map.get(k) : null; }
    setItem(k, v) { this.map.set(k, String(v)); }
    removeItem(k) { this.map.delete(k); }
    clear() { this.map.clear(); }
}

function record(list, args) {
    list.push(args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === "string" ? a : safeJson(a))).join(" "));
}

function safeJson(v) {
    try {
        return JSON.stringify(v)?.slice(0, 400);
    } catch {
        return String(v);
    }
}

export function installBrowser({origin, staticFiles = {}, verbose = false}) {
    const page = new URL("/chat", origin);
    const jar = new CookieJar();
    const nodeFetch = globalThis.fetch;

    const pageFetch = async (input, init = {}) => {
        const url = new URL(input instanceof Request ? input.url : String(input), page);
        const sameOrigin = url.origin === page.origin;
        const credentials = init.credentials ?? "same-origin";
        if (sameOrigin && Object.hasOwn(staticFiles, url.pathname)) {
            observed.requests.push({method: init.method ?? "GET", path: url.pathname, status: 200, static: true});
            return new Response(JSON.stringify(staticFiles[url.pathname]), {headers: {"content-type": "application/json"}});
        }
        const headers = new Headers(init.headers);
        const sendCookies = credentials === "include" || (credentials === "same-origin" && sameOrigin);
        if (sendCookies && jar.cookies.size) headers.set("cookie", jar.header({forScript: false}));
        const res = await nodeFetch(url, {...init, headers, credentials: undefined, mode: undefined});
        if (sendCookies) for (const c of res.headers.getSetCookie()) jar.setFromString(c, {fromScript: false});
        observed.requests.push({method: init.method ?? "GET", path: url.pathname, status: res.status});
        return res;
    };

    class EventSource extends NodeEventSource {
        constructor(url, init = {}) {
            super(new URL(String(url), page), {...init, fetch: pageFetch});
            observed.eventSources.push(this);
            const dispatch = this.dispatchEvent.bind(this);
            this.dispatchEvent = (ev) => {
                observed.sseEvents.push({event: ev.type, at: Date.now(), data: ev.data});
                return dispatch(ev);
            };
        }
    }

    const recorderCompose = () => (...enhancers) => (createStore) => (reducer, preloaded) => {
        const recording = (state, action) => {
            const entry = {type: action.type, at: Date.now()};
            if (KEEP_PAYLOAD.test(action.type)) entry.payload = action.payload;
            observed.actions.push(entry);
            try {
                return reducer(state, action);
            } catch (err) {
                observed.reducerErrors.push({type: action.type, error: String(err?.stack ?? err)});
                throw err;
            }
        };
        const inner = enhancers.reduceRight((acc, enhance) => enhance(acc), createStore);
        return inner(recording, preloaded);
    };

    const document = {
        get cookie() { return jar.header({forScript: true}); },
        set cookie(v) { jar.setFromString(String(v), {fromScript: true}); },
        body: {style: {}, appendChild() {}, removeChild() {}},
        createElement: () => ({style: {}, click() {}, setAttribute() {}, addEventListener() {}}),
        addEventListener() {},
        removeEventListener() {},
    };

    Object.assign(globalThis, {
        window: globalThis,
        location: {
            origin: page.origin, href: page.href, protocol: page.protocol, host: page.host,
            hostname: page.hostname, port: page.port, pathname: page.pathname, search: "", hash: "",
            assign() {}, replace() {},
        },
        document,
        localStorage: new MemoryStorage(),
        sessionStorage: new MemoryStorage(),
        getComputedStyle: () => ({fontSize: "16px"}),
        fetch: pageFetch,
        EventSource,
        __REDUX_DEVTOOLS_EXTENSION_COMPOSE__: recorderCompose,
    });

    const origError = console.error.bind(console);
    const origWarn = console.warn.bind(console);
    console.error = (...args) => {
        record(observed.consoleErrors, args);
        if (verbose) origError(...args);
    };
    console.warn = (...args) => {
        record(observed.consoleWarnings, args);
        if (verbose) origWarn(...args);
    };
    if (!verbose) {
        console.log = () => {};
        console.info = () => {};
        console.debug = () => {};
    }
    process.on("unhandledRejection", (err) => observed.unhandled.push(String(err?.stack ?? err)));
    process.on("uncaughtException", (err) => observed.unhandled.push(String(err?.stack ?? err)));
    return {jar, pageFetch};
}

export function closeBrowser() {
    for (const es of observed.eventSources) es.close();
}
