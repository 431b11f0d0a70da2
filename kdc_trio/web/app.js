// kdc-trio demo page: one EventSource on /sse/stream, one POST /sse/chat per message.
// Plain JS, no build step, no third-party code. Everything the server sends is rendered with
// textContent (never innerHTML). EventSource resumes by itself with Last-Event-ID because every
// chat event carries an `id:` (its session sequence); the page shows when it did.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const token = params.get("token");  // optional: ?token=<access token>
  const FAMILIES = ["chat_start", "chat_step", "chat_delta", "chat_complete", "chat_error", "conv_status"];
  // After a stream is refused for good (e.g. a restarted gateway forgot the session), wait this
  // long before starting over with a new session.
  const RESTART_DELAY_MS = 1000;

  const state = {
    sessionId: null,
    streamId: "web-" + Math.random().toString(36).slice(2, 12),
    conversationId: null,
    source: null,
    readyCount: 0,      // `ready` events seen: every one after the first is a resumed stream
    lastId: 0,          // highest session sequence received (what Last-Event-ID carries)
    seen: [],           // every sequence received, in order (tests read it: no gap, no repeat)
    events: 0,
    duplicates: 0,      // events at or below lastId (a server that repeats itself would show here)
    reconnects: 0,
    gaps: 0,            // resumes the gateway could not replay in full (`stream.gap`)
    restarted: false,   // the last stream was refused for good and a new session was started
    turns: new Map(),   // turn_id -> the turn's DOM parts
    busy: false,
  };
  window.kdcDemo = state;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function newId(prefix) { return prefix + "-web-" + Math.random().toString(36).slice(2, 14); }
  function authHeaders() { return token ? { Authorization: "Bearer " + token } : {}; }

  function setStatus(kind, label) {
    const s = $("status");
    s.className = "pill pill-" + kind;
    s.dataset.state = kind;
    s.textContent = label;
  }
  function notice(text, kind) {
    const n = $("notice");
    n.className = "notice" + (kind ? " " + kind : "");
    n.textContent = text;
    n.hidden = false;
  }
  function renderStats() {
    $("stats").textContent = `events ${state.events} · last id ${state.lastId} · reconnects ${state.reconnects}` +
      ` · duplicates ${state.duplicates} · stream ${state.streamId}`;
    $("stats").dataset.duplicates = String(state.duplicates);
  }

  // ---- the stream -------------------------------------------------------------------------
  async function newSession() {
    const r = await fetch("/api/session", { headers: authHeaders() });
    if (r.status === 401) {
      const err = await r.json().catch(() => ({}));
      notice(`The gateway refused this page: ${err.error || "unauthorized"} (${err.detail || ""}). ` +
             "Open it as /?token=<access token>.", "warn");
      throw new Error("refused");
    }
    if (!r.ok) throw new Error(`GET /api/session: ${r.status}`);
    return (await r.json()).session_id;
  }

  function streamUrl() {
    const q = new URLSearchParams({ stream_id: state.streamId, user_session_id: state.sessionId });
    if (token) q.set("bearer_token", token);
    return "/sse/stream?" + q.toString();
  }

  function open() {
    const es = new EventSource(streamUrl());
    state.source = es;
    es.addEventListener("ready", onReady);
    for (const family of FAMILIES) es.addEventListener(family, onChatEvent);
    es.addEventListener("chat_service", onService);
    es.addEventListener("server_shutdown", () => setStatus("reconnecting", "server draining…"));
    es.onerror = () => {
      if (es.readyState === EventSource.CONNECTING) {
        setStatus("reconnecting", "reconnecting…");
      } else if (es.readyState === EventSource.CLOSED) {
        // Refused (not a network error): EventSource gives up. Start over with a new session.
        setStatus("closed", "disconnected");
        setTimeout(restart, RESTART_DELAY_MS);
      }
    };
  }

  async function restart() {
    try {
      state.sessionId = await newSession();
    } catch (e) {
      setStatus("closed", e.message === "refused" ? "sign-in required" : "gateway unreachable");
      setTimeout(restart, RESTART_DELAY_MS * 3);
      return;
    }
    state.lastId = 0;
    state.readyCount = 0;
    state.restarted = true;  // told by onReady once the new stream is up
    open();
  }

  function onReady(e) {
    const r = JSON.parse(e.data);
    state.readyCount += 1;
    setStatus("live", "live");
    $("session").textContent = `session ${r.session_id} · ${r.user_type}` +
      (r.user_id ? ` (${r.user_id})` : "") + ` · ${r.tenant}/${r.project}`;
    $("session").dataset.sessionId = r.session_id;
    if (state.restarted) {
      state.restarted = false;
      notice("The gateway did not know this session any more (restarted?): started a new one.");
      timeline("New session " + r.session_id, "session", null, null, "note resumed");
    } else if (state.readyCount > 1) {
      state.reconnects += 1;
      notice(`Reconnected (#${state.reconnects}): resumed after event ${state.lastId} with Last-Event-ID; ` +
             "missed events are replayed from the session log.");
      $("notice").dataset.reconnects = String(state.reconnects);
      timeline(`Stream resumed after event ${state.lastId}`, "Last-Event-ID", null, null, "note resumed");
    }
    renderStats();
  }

  function onChatEvent(e) {
    const env = JSON.parse(e.data);
    // A sequence only when the event had an `id:` (EventSource repeats the last id otherwise).
    const seq = (typeof env.seq === "number" && e.lastEventId === String(env.seq)) ? env.seq : null;
    if (seq !== null) {
      if (seq <= state.lastId) { state.duplicates += 1; renderStats(); return; }
      state.lastId = seq;
      state.seen.push(seq);
    }
    state.events += 1;
    handle(e.type, env);
    renderStats();
  }

  function onService(e) {
    const env = JSON.parse(e.data);
    if (env.type !== "stream.gap") return;
    const d = env.data || {};
    state.gaps += 1;
    notice(`Events ${d.after_seq + 1}–${d.first_seq - 1} were lost: the session log no longer held them ` +
           `(${d.reason}). What followed them is shown.`, "warn");
    $("notice").dataset.gaps = String(state.gaps);
    timeline(`Events ${d.after_seq + 1}–${d.first_seq - 1} lost`, "stream.gap", null, null, "lost");
  }

  // ---- turns --------------------------------------------------------------------------------
  function turnView(turnId, text, files) {
    let t = state.turns.get(turnId);
    if (t) return t;
    $("empty").hidden = true;
    const root = el("div", "turn");
    root.dataset.turnId = turnId;
    if (text !== undefined) {
      const user = el("div", "user", text);
      if (files && files.length) {
        const chips = el("div", "chips");
        for (const f of files) chips.append(el("span", "chip", `${f.name} · ${f.size} B`));
        user.append(chips);
      }
      root.append(user);
    }
    const bot = el("div", "bot");
    const thinking = el("details", "thinking");
    thinking.open = true;
    thinking.append(el("summary", null, "Thinking"));
    const thinkingText = el("div", "text");
    thinking.append(thinkingText);
    thinking.hidden = true;
    const answer = el("div", "answer streaming");
    const followups = el("div", "followups");
    bot.append(thinking, answer, followups);
    root.append(bot);
    $("turns").append(root);
    t = { root, bot, thinking, thinkingText, answer, followups };
    state.turns.set(turnId, t);
    return t;
  }

  // One entry per step of the turn: a later status of the same step updates its entry.
  function timeline(title, status, extra, key, cls) {
    let li = key ? $("timeline").querySelector(`li[data-key="${CSS.escape(key)}"]`) : null;
    if (!li) {
      li = el("li");
      if (key) li.dataset.key = key;
      $("timeline").append(li);
    }
    li.className = cls || status || "";
    li.replaceChildren(el("span", null, title));
    if (status) li.append(el("span", "when", status));
    if (extra) li.append(...extra);
    li.scrollIntoView({ block: "nearest" });
  }

  function handle(family, env) {
    const turnId = (env.conversation && env.conversation.turn_id) || "-";
    const ev = env.event || {};
    const data = env.data || {};
    if (family === "conv_status") {
      const badge = $("conv-status");
      badge.className = "badge " + (data.state || "");
      badge.textContent = data.state + (data.completion ? ` · ${data.completion}` : "");
      badge.dataset.state = data.state || "";
      setBusy(data.state === "in_progress");
      return;
    }
    const t = turnView(turnId);
    if (family === "chat_start") {
      timeline("Turn started", "started", null, "turn-start");
    } else if (family === "chat_step") {
      if (env.type === "chat.followups") {
        t.followups.replaceChildren();
        for (const item of data.items || []) {
          const b = el("button", "followup", String(item));
          b.type = "button";
          b.addEventListener("click", () => send(String(item), []));
          t.followups.append(b);
        }
        timeline("Follow-ups offered", ev.status);
      } else {
        const extra = [];
        for (const a of data.attachments || []) {
          const line = el("span", "file mono");
          line.append(el("span", null, `${a.filename} · ${a.size} B · sha256 `), el("span", "sha", a.sha256));
          extra.push(line);
        }
        timeline(ev.title || ev.step || "step", ev.status, extra, "step:" + (ev.step || ev.title));
      }
    } else if (family === "chat_delta") {
      const d = env.delta || {};
      if (d.marker === "thinking") {
        t.thinking.hidden = false;
        t.thinkingText.textContent += d.text || "";
        if (d.completed) t.thinking.open = false;
      } else if (d.marker === "answer") {
        t.answer.textContent += d.text || "";
        if (d.completed) t.answer.classList.remove("streaming");
      } else if (d.marker === "canvas") {
        const c = $("canvas");
        if (d.index === 0 && c.dataset.turnId !== turnId) c.textContent = "";
        c.dataset.turnId = turnId;
        c.textContent += d.text || "";
        $("canvas-name").textContent = [d.artifact_name, d.format].filter(Boolean).join(" · ");
      } else if (d.text) {
        timeline(d.text, d.marker, null, null, "note");
      }
    } else if (family === "chat_complete") {
      t.answer.classList.remove("streaming");
      timeline("Turn started", "completed", null, "turn-start");
      timeline("Turn completed", "completed");
    } else if (family === "chat_error") {
      t.answer.classList.remove("streaming");
      t.bot.append(el("div", "error", "Error: " + (data.error || "the turn failed")));
      timeline("Turn failed", "error");
    }
  }

  function setBusy(busy) {
    state.busy = busy;
    $("send").disabled = busy;
    for (const b of document.querySelectorAll(".followup")) b.disabled = busy;
  }

  // ---- sending ------------------------------------------------------------------------------
  async function send(text, files) {
    if (!text && !files.length) return;
    const turnId = newId("turn");
    state.conversationId = state.conversationId || newId("conv");
    const message = { text, turn_id: turnId, conversation_id: state.conversationId };
    turnView(turnId, text, files);
    $("timeline").replaceChildren();
    setBusy(true);
    const q = new URLSearchParams({ stream_id: state.streamId, user_session_id: state.sessionId });
    let body;
    const headers = authHeaders();
    if (files.length) {
      body = new FormData();
      body.append("message", JSON.stringify(message));
      body.append("attachment_meta", JSON.stringify(files.map((f) => ({ filename: f.name, mime: f.type || undefined }))));
      for (const f of files) body.append("files", f, f.name);
    } else {
      body = JSON.stringify({ message });
      headers["content-type"] = "application/json";
    }
    try {
      const r = await fetch("/sse/chat?" + q.toString(), { method: "POST", body, headers });
      if (r.status !== 202) {
        const err = await r.json().catch(() => ({}));
        throw new Error(`${r.status} ${err.error || ""}: ${err.detail || ""}`);
      }
    } catch (e) {
      const t = state.turns.get(turnId);
      t.answer.classList.remove("streaming");
      t.bot.append(el("div", "error", "Not sent: " + e.message));
      setBusy(false);
    }
  }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    const files = Array.from($("files").files);
    $("text").value = "";
    $("files").value = "";
    $("file-names").textContent = "";
    send(text, files);
  });
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      if (!state.busy) $("composer").requestSubmit();
    }
  });
  $("files").addEventListener("change", () => {
    $("file-names").textContent = Array.from($("files").files).map((f) => f.name).join(", ");
  });

  (async () => {
    try {
      state.sessionId = await newSession();
    } catch (e) {
      setStatus("closed", e.message === "refused" ? "sign-in required" : "gateway unreachable");
      setTimeout(restart, RESTART_DELAY_MS);
      return;
    }
    open();
    renderStats();
  })();
})();
