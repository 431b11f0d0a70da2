"""The demo bundle: what a newcomer sees answer on a fresh server.

It streams `thinking` deltas, `answer` deltas that echo the user's text, one `canvas` item,
one `timeline_text` entry, a `chat.followups` card, and an `attachments_received` step listing
each attachment as {filename, mime, size, sha256} computed from the bytes it got. Messages the
client sent to the conversation while the answer streamed (KDCube's follow-ups and steers) are
taken into this turn before it ends: a follow-up is answered in it ("You added: …", with its
attachments' digests in a `continuation_received` step), a steer is acknowledged (a `steer_received`
step); neither runs as a turn of its own.
"""

from __future__ import annotations

import trio

from kdc_trio.processor.turn import Turn
from kdc_trio.sdk import AIBEmitters, ChatCommunicator

AGENT = "demo"
# Answer words are streamed in groups of this many, a small pause apart, to look like a model.
WORDS_PER_DELTA = 3
DELTA_PAUSE_S = 0.01


class DemoBundle:
    async def run(self, turn: Turn, comm: ChatCommunicator) -> None:
        emit = AIBEmitters(comm, agent=AGENT)
        text = turn.message.text
        await comm.start(message=text, agent=AGENT)
        await comm.step(step="attachments_received", status="completed", title="Attachments received", agent=AGENT,
                        data={"attachments": [a.describe() for a in turn.message.attachments]})
        await comm.step(step="thinking", status="started", title="Thinking", agent=AGENT)
        thoughts = ["Reading the message. ", f"It has {len(text)} characters", " and "
                    f"{len(turn.message.attachments)} attachment(s)."]
        for i, t in enumerate(thoughts):
            await emit.delta(text=t, index=i, marker="thinking")
        await emit.delta(text="", index=len(thoughts), marker="thinking", completed=True)
        await comm.step(step="thinking", status="completed", title="Thinking", agent=AGENT)

        words = (f"You said: {text}" if text else "You sent no text.").split(" ")
        index = 0
        for i in range(0, len(words), WORDS_PER_DELTA):
            chunk = " ".join(words[i:i + WORDS_PER_DELTA])
            await emit.delta(text=chunk if i == 0 else " " + chunk, index=index, marker="answer")
            index += 1
            await trio.sleep(DELTA_PAUSE_S)
        for extra in await turn.take_continuations():
            if extra.is_steer:
                await comm.step(step="steer_received", status="completed", title="Steer received", agent=AGENT,
                                data={"text": extra.text, "turn_id": extra.turn_id})
                continue
            await comm.step(step="continuation_received", status="completed", title="Follow-up received",
                            agent=AGENT, data={"text": extra.text, "turn_id": extra.turn_id,
                                               "attachments": [a.describe() for a in extra.attachments]})
            await emit.delta(text=f"\n\nYou added: {extra.text}", index=index, marker="answer")
            index += 1
        await emit.delta(text="", index=index, marker="answer", completed=True)

        await emit.delta(text=f"# Echo\n\n{text}\n", index=0, marker="canvas", format="markdown",
                         artifact_name="echo.md", extra={"title": "Echo"}, completed=True)
        await emit.delta(text="Echoed the message", index=0, marker="timeline_text", artifact_name="timeline",
                         completed=True)
        await comm.event(type="chat.followups", step="followups", status="completed", title="Follow-ups",
                         agent=AGENT, data={"items": ["Tell me more", "Send a file", "Start over"]})
        await comm.complete(data={"answer": " ".join(words), "attachments": len(turn.message.attachments)},
                            agent=AGENT)
