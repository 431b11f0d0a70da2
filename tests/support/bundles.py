"""Bundles for tests that run the gateway or a worker in another process (importable by name)."""

from __future__ import annotations

import trio

SLOW_DELTAS = 12
SLOW_DELTA_S = 0.1


class SlowBroadcastBundle:
    """A turn of SLOW_DELTAS deltas, one every SLOW_DELTA_S, to every connection of the session:
    long enough to kill its worker in the middle."""

    async def run(self, turn, comm):
        await comm.start(message=turn.message.text, broadcast=True)
        for i in range(SLOW_DELTAS):
            await comm.delta(f"d{i} ", index=i, marker="answer", broadcast=True)
            await trio.sleep(SLOW_DELTA_S)
        await comm.complete(data={"deltas": SLOW_DELTAS}, broadcast=True)


class FailingBundle:
    """Starts, streams a little of an answer, then raises: the turn ends in `chat_error`."""

    async def run(self, turn, comm):
        await comm.start(message=turn.message.text)
        await comm.delta("partial ", index=0, marker="answer")
        raise RuntimeError("the bundle broke on purpose")


class ContinuationBundle:
    """For continuation tests. A message `take` waits (up to 10 s) for a continuation and says what
    it took; `hold <s>` runs for <s> seconds taking nothing; anything else answers at once."""

    async def run(self, turn, comm):
        text = turn.message.text
        await comm.start(message=text)
        if text == "take":
            m = await turn.next_continuation(timeout=10)
            said = f"took {m.event_type}: {m.text} ({len(m.attachments)} files)" if m else "took nothing"
            await comm.delta(said, index=0, completed=True)
        elif text.startswith("hold "):
            await trio.sleep(float(text.split()[1]))
            await comm.delta("held", index=0, completed=True)
        else:
            await comm.delta(f"answer to {text}", index=0, completed=True)
        await comm.complete(data={"text": text})
