"""KDCube's web clients on the wire, replayed in Python: the requests they send and the fields they read.

Written from kdcube/kdcube-ai-app at commit eefe18532 (`app/ai-app/ui/`; paths below are relative to
it, `W/` = `chat-web-app/src/`, `P/` = `mini-apps/sse-proto/src/`). Every request and every field read
names the file:line it mirrors, so a change on either side can be traced. tools/kdcube_harness/ runs
the real client code against the gateway; this module keeps the same wire covered where KDCube's sources
(and the network) are not available, as in CI.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

KDCUBE_REF = "eefe18532"
STREAM_ID_HEADER = "KDC-Stream-ID"      # W/features/chat/chatSettingsSlice.ts:47 streamIdHeaderName default
AUTH_COOKIE = "__Secure-LATC"           # W/features/chat/chatSettingsSlice.ts:49 authCookieName default
ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})\Z")

_last_turn_ms = 0


def client_turn_id() -> str:
    """W/utils/clientIds.ts:3-12 createClientTurnId: `turn_YYYY-MM-DD-hh-mm-ss-mmm` (UTC). Two ids of one
    millisecond would be equal; a user's clicks are further apart, so the replay waits for the next one."""
    global _last_turn_ms
    ms = time.time_ns() // 1_000_000
    ms = max(ms, _last_turn_ms + 1)
    _last_turn_ms = ms
    t = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return t.strftime("turn_%Y-%m-%d-%H-%M-%S") + f"-{ms % 1000:03d}"


@dataclass(frozen=True)
class PickedFile:
    """A browser File: name, type, bytes (W/features/chat/chatServiceMiddleware.ts:419-440 reads name/size)."""

    name: str
    mime: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def demo_files() -> list[PickedFile]:
    """The two attachments the harness sends (tools/kdcube_harness/common.mjs demoFiles)."""
    return [PickedFile("notes.txt", "text/plain", "KDCube harness attachment: plain text, ünïcødé.\n".encode()),
            PickedFile("blob.bin", "application/octet-stream", bytes(i % 256 for i in range(1024)))]


def event_submission(text: str, *, tenant: str, project: str, turn_id: str, files: list[PickedFile] = (),
                     reactive_event_type: str = "event.user.prompt", conversation_id: str | None = None,
                     chat_history: list | None = None, target_turn_id: str | None = None) -> dict[str, Any]:
    """W/features/chatController/chatBase.ts:511-570 buildEventSubmission, fed as
    W/features/chat/chatServiceMiddleware.ts:400-469 feeds it (no bundle selected: no bundle_id)."""
    events: list[dict[str, Any]] = []
    text = text.strip()                                             # chatBase.ts:514
    if text or reactive_event_type == "event.user.steer":          # chatBase.ts:516
        source = {"event.user.steer": "chat.steer", "event.user.followup": "chat.followup"}.get(
            reactive_event_type, "chat.message")                    # chatBase.ts:517-522
        events.append({"event_id": str(uuid.uuid4()), "type": reactive_event_type, "event_source_id": source,
                       "reactive": True,                            # agent_id/story_id undefined: dropped by JSON
                       "payload": {"mime": "text/plain", "event": {"text": text}}})
    for index, f in enumerate(files):                               # chatBase.ts:536-553
        mime = f.mime or "application/octet-stream"
        events.append({"event_id": str(uuid.uuid4()), "type": "event.user.attachment.file",
                       "event_source_id": "chat.attachment", "reactive": True,
                       "payload": {"mime": mime, "event": {"filename": f.name, "size": len(f.data), "mime": mime,
                                                           "file_index": index}}})
    body: dict[str, Any] = {"external_events": events, "chat_history": chat_history or [],   # chatBase.ts:556-558
                            "project": project, "tenant": tenant, "turn_id": turn_id}          # chatBase.ts:559-561
    if conversation_id:
        body["conversation_id"] = conversation_id                   # chatBase.ts:562
    if target_turn_id:                                              # chatServiceMiddleware.ts:462-465
        body["active_turn_id"] = target_turn_id                     # chatBase.ts:564
        body["target_turn_id"] = target_turn_id                     # chatBase.ts:565
    return body


def history_entry(text: str, sent_ms: int) -> dict[str, Any]:
    """W/features/chat/chatServiceMiddleware.ts:126-135 getConversationHistory, one user turn."""
    iso = datetime.fromtimestamp(sent_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
    return {"role": "user", "content": text, "timestamp": iso.replace("+00:00", "Z"), "id": sent_ms}


def tz_headers() -> dict[str, str]:
    """W/features/chatController/chatBase.ts:495-501 addTZHeader (a browser in UTC)."""
    return {"X-User-Timezone": "UTC", "X-User-UTC-Offset": "0"}


def assert_submit_accepted(ack: Any) -> dict[str, Any]:
    """W/features/chatController/chatBase.ts:237-243 assertChatSubmitAccepted: `ok: false` is a refusal."""
    assert isinstance(ack, dict), f"ack is not an object: {ack!r}"
    assert ack.get("ok") is not False, f"refused: {ack}"
    # chatServiceMiddleware.ts:480 setConversationId(ack.conversation_id); :484 ack.turn_id || turnId
    assert isinstance(ack.get("conversation_id"), str) and ack["conversation_id"], ack
    return ack


def js_date_parse_ok(value: Any) -> bool:
    """`Date.parse(env.timestamp)` is finite (W/features/chat/chatStateSlice.ts:723, 659, 483): an ISO string."""
    return isinstance(value, str) and bool(ISO_RE.match(value))


# --------------------------------------------------------------------------- the reducers' reads


@dataclass
class TurnView:
    """What W/features/chat/chatStateSlice.ts builds for one turn from its envelopes."""

    turn_id: str
    started: bool = False
    completed: bool = False
    error: str | None = None
    answer: str = ""
    thinking: str = ""
    steps: dict[str, dict] = field(default_factory=dict)
    followups: list | None = None
    canvas: dict | None = None
    timeline: dict | None = None


def reduce_turn(envelopes: list[tuple[str, dict]], turn_id: str) -> TurnView:
    """Applies the reducers' field reads in order; raises where the JS would throw (a missing object)."""
    view = TurnView(turn_id)
    for family, env in envelopes:
        if env["conversation"]["turn_id"] != turn_id:              # every handler reads conversation.turn_id
            continue
        if family == "chat_start":                                  # chatStateSlice.ts:481-501
            view.started = True
        elif family == "chat_step":                                 # chatStateSlice.ts:641-718
            step = env["event"]["step"]                             # :645
            view.steps[step] = {"status": env["event"]["status"], "data": env.get("data")}   # :646, :661-669
            if step == "followups" and env["event"]["status"] == "completed":
                view.followups = (env.get("data") or {}).get("items") or []                 # :713-715
        elif family == "chat_delta":                                # chatStateSlice.ts:719-
            delta = env["delta"]
            marker = delta.get("marker") or "answer"                # :722
            extra = env["extra"]                                    # :792, :823 env.extra.* (TypeError if absent)
            assert isinstance(extra, dict), f"extra is {extra!r}"
            assert isinstance(delta["index"], int) and isinstance(delta["text"], str), delta   # :724-725
            if marker == "answer":
                view.answer += delta["text"]
            elif marker == "thinking":
                view.thinking += delta["text"]
            elif marker == "canvas":                                # :785-811
                view.canvas = {"name": extra.get("artifact_name"), "title": extra.get("title"),
                               "format": extra.get("format"), "completed": bool(delta.get("completed"))}
            elif marker == "timeline_text":                         # :814-837
                view.timeline = {"name": extra.get("artifact_name"), "text": delta["text"]}
        elif family == "chat_complete":                             # chatStateSlice.ts:503-515
            view.completed = not env["data"].get("error_message")
        elif family == "chat_error":                                # chatServiceMiddleware.ts:345-346
            view.error = env["data"]["error"]
    return view


DEMO_FOLLOWUPS = ["Tell me more", "Send a file", "Start over"]


def check_demo_turn(view: TurnView, text: str, files: list[PickedFile] = (), *,
                    took_followup: str | None = None) -> list[str]:
    """The demo bundle's turn as the app shows it: answer, thinking, steps, followups, canvas, timeline,
    and each attachment's sha256 (tools/kdcube_harness/app_scenario.mjs checkDemoTurn, same checks).
    `took_followup`: a follow-up this turn took, answered after the echo ("You added: …")."""
    problems = []
    if not (view.started and view.completed) or view.error:
        problems.append(f"turn started={view.started} completed={view.completed} error={view.error}")
    if view.answer != f"You said: {text}" + (f"\n\nYou added: {took_followup}" if took_followup else ""):
        problems.append(f"answer {view.answer[:80]!r}")
    if not view.thinking.startswith("Reading the message."):
        problems.append(f"thinking {view.thinking[:40]!r}")
    for step in ("attachments_received", "thinking", "followups"):
        if view.steps.get(step, {}).get("status") != "completed":
            problems.append(f"step {step}: {view.steps.get(step)}")
    if view.followups != DEMO_FOLLOWUPS:
        problems.append(f"followups {view.followups}")
    if not view.canvas or view.canvas["name"] != "echo.md" or view.canvas["format"] != "markdown":
        problems.append(f"canvas {view.canvas}")
    if not view.timeline or view.timeline["text"] != "Echoed the message":
        problems.append(f"timeline {view.timeline}")
    got = (view.steps.get("attachments_received", {}).get("data") or {}).get("attachments") or []
    want = [{"filename": f.name, "sha256": f.sha256, "size": len(f.data)} for f in files]
    if [{k: a.get(k) for k in ("filename", "sha256", "size")} for a in got] != want:
        problems.append(f"attachments {got} != {want}")
    return problems


def envelope_problems(family: str, env: dict) -> list[str]:
    """What every chat envelope must satisfy for the app's reducers: ISO timestamp, real ids, `extra`."""
    problems = []
    if not js_date_parse_ok(env.get("timestamp")):
        problems.append(f"{family} timestamp {env.get('timestamp')!r}")
    conv = env.get("conversation") or {}
    for key in ("conversation_id", "turn_id"):
        value = conv.get(key)
        if family != "conv_status" or key == "conversation_id":
            if not isinstance(value, str) or value in ("", "-"):
                problems.append(f"{family} conversation.{key} = {value!r}")
    if family == "chat_delta" and not isinstance(env.get("extra"), dict):
        problems.append(f"chat_delta without extra: {json.dumps(env)[:200]}")
    return problems


def is_epoch(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
