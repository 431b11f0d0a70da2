"""Counting what a client got of a turn (sent, received, duplicates, gaps, time to recover), and the
official socket.io-client run through a drop (tests/node/recovery_client.mjs), line by line."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from tests.support.node import node_client_dir


@dataclass
class Counts:
    sent: int
    received: int
    duplicates: int
    gaps: int
    reordered: int
    recover_s: float | None

    def line(self, name: str) -> str:
        rec = "-" if self.recover_s is None else f"{self.recover_s:.3f}s"
        return (f"[{name}] sent={self.sent} received={self.received} duplicates={self.duplicates} "
                f"gaps={self.gaps} reordered={self.reordered} time_to_recover={rec}")


def count(seqs: list[int], first: int, last: int, recover_s: float | None) -> Counts:
    """What a client received of the session events `first..last` (the turn as the log has it)."""
    inside = [s for s in seqs if first <= s <= last]
    return Counts(sent=last - first + 1, received=len(set(inside)), duplicates=len(inside) - len(set(inside)),
                  gaps=len(set(range(first, last + 1)) - set(inside)),
                  reordered=sum(1 for a, b in zip(inside, inside[1:]) if b <= a), recover_s=recover_s)


@dataclass
class NodeRun:
    """tests/node/recovery_client.mjs as it runs: its lines so far, and a way to wait for one."""

    proc: Any = None
    lines: list[dict] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    def events(self, name: str | None = None) -> list[dict]:
        return [x for x in self.lines if x["t"] == "event" and (name is None or x["event"] == name)]

    def of(self, kind: str) -> list[dict]:
        return [x for x in self.lines if x["t"] == kind]

    async def wait_for(self, pred, timeout: float = 20.0) -> None:
        with trio.fail_after(timeout):
            while not pred(self):
                self._changed = trio.Event()
                await self._changed.wait()

    async def _read(self) -> None:
        buf = b""
        async for chunk in self.proc.stdout:
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                self.lines.append(json.loads(raw))
                self._changed.set()
        self._changed.set()


async def start_node_recovery(nursery: trio.Nursery, url: str, auth: dict, text: str,
                              quit_after_deltas: int = 0) -> NodeRun:
    cwd = node_client_dir()
    run = NodeRun()
    run.proc = await nursery.start(partial(trio.run_process, ["node", "recovery_client.mjs", url, json.dumps(auth), text,
                                                   str(quit_after_deltas)],
                                           cwd=cwd, stdout=subprocess.PIPE, check=False))
    nursery.start_soon(run._read)
    return run
