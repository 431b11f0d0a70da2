"""Bundles for tests that run the gateway or a worker in another process (importable by name)."""

from __future__ import annotations

import trio

SLOW_DELTAS = 12
SLOW_DELTA_S = 0.1


class SlowBroadcastBundle:
    """A turn of `deltas` deltas (`d0 `, `d1 `, …), one every `delta_s`, to every connection of the
    session: long enough to kill its worker (or fail its Redis over) in the middle."""

    def __init__(self, deltas: int = SLOW_DELTAS, delta_s: float = SLOW_DELTA_S) -> None:
        self.deltas = deltas
        self.delta_s = delta_s

    async def run(self, turn, comm):
        await comm.start(message=turn.message.text, broadcast=True)
        for i in range(self.deltas):
            await comm.delta(f"d{i} ", index=i, marker="answer", broadcast=True)
            await trio.sleep(self.delta_s)
        await comm.complete(data={"deltas": self.deltas}, broadcast=True)


# A broadcast turn of ~6 s for processes (KDC_BUNDLE=tests.support.bundles:LONG_BROADCAST):
# long enough to fail its Redis master over in the middle.
LONG_BROADCAST = SlowBroadcastBundle(deltas=60, delta_s=0.1)


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


TARGETED_DELTAS = 30
TARGETED_DELTA_S = 0.05


class SlowTargetedBundle:
    """A turn of TARGETED_DELTAS deltas, one every TARGETED_DELTA_S, each targeted to the connection
    that sent the message (its stream_id): a client that reconnects mid-turn gets the rest only if
    it keeps its stream. The message `hold <s>` first waits <s> seconds."""

    async def run(self, turn, comm):
        text = turn.message.text or ""
        await comm.start(message=text)
        if text.startswith("hold "):
            await trio.sleep(float(text.split()[1]))
        for i in range(TARGETED_DELTAS):
            await comm.delta(f"t{i} ", index=i, marker="answer")
            await trio.sleep(TARGETED_DELTA_S)
        await comm.complete(data={"deltas": TARGETED_DELTAS})
