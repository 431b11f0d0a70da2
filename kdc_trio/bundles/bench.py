"""The bench bundle: a producer for bench/ (`KDC_BUNDLE=kdc_trio.bundles.bench:BenchBundle`).

The message text is JSON `{"n": N, "size": S, "rate": R, "broadcast": B, "phase": P}`: N
`chat_delta` events whose text is `<time_ns>|` then filler up to S bytes, R per second (0 = as
fast as the relay takes them), the first P seconds after the turn starts (at most MAX_PHASE_S;
bench/'s `many` spreads its sessions' first events over one period, as independent sessions'
are), to the sending connection or, with B, to every connection of the session. The
timestamp is the producer's clock at emit time: bench clients on the same machine measure
producer→client latency from it. Pacing uses the shared heap timer (kdc_trio/util/timers.py), the
counterpart of the peers' setTimeout / asyncio.sleep: a trio.sleep_until per event would cost the
producer more CPU than the event itself.
"""

from __future__ import annotations

import json
import time

import trio

from kdc_trio.processor.turn import Turn
from kdc_trio.sdk import ChatCommunicator
from kdc_trio.util.timers import Timers


# The longest wait before the first event a turn may ask for.
MAX_PHASE_S = 60.0


def spec_of(text: str) -> tuple[int, int, float, bool, float]:
    try:
        spec = json.loads(text) if text.strip().startswith("{") else {}
    except ValueError:
        spec = {}
    try:  # as the Python peers read it (bench/peers/fill.py): what is not a number is no wait
        phase = min(MAX_PHASE_S, max(0.0, float(spec.get("phase", 0))))
    except (TypeError, ValueError):
        phase = 0.0
    return (int(spec.get("n", 100)), int(spec.get("size", 100)), float(spec.get("rate", 0)),
            bool(spec.get("broadcast", False)), phase)


class BenchBundle:
    async def run(self, turn: Turn, comm: ChatCommunicator) -> None:
        n, size, rate, broadcast, phase = spec_of(turn.message.text)
        await comm.start(message="bench", broadcast=broadcast)
        interval = 1.0 / rate if rate > 0 else 0.0
        timers = Timers.shared() if interval or phase else None
        next_at = trio.current_time() + phase
        if phase:
            await timers.sleep_until(next_at)
        for i in range(n):
            head = f"{time.time_ns()}|"
            await comm.delta(head + "x" * max(0, size - len(head)), index=i, marker="answer", broadcast=broadcast)
            if interval:
                next_at += interval
                await timers.sleep_until(next_at)
        await comm.complete(data={"n": n}, broadcast=broadcast)
