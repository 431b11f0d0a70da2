"""Run callbacks once the tasks running now have yielded: one task for the whole process.

Write-through (server/wire.py) sends an event in the relay's own call. Sent at once, an event
that a producer emits back to back with others (a fast stream; one broadcast to many
connections) costs a `send` each. `Soon.shared().call(fn)` instead runs `fn` in the next batch
of trio's scheduler: everything the producers emitted meanwhile goes out together, one `send`
per connection per batch — Node's socket writes behave the same way, coalesced within a tick.
The price is one task step per scheduler batch for the whole process, not per event, and an
event leaves microseconds later than it would have.

One instance per trio run (a system task, started on first use; it lives as long as the run).
Outside a run, or once its task stopped, `call` returns False and the caller does the work at
once. A callback that raises is logged and the others still run.
"""

from __future__ import annotations

import logging
from typing import Callable

import trio

from kdc_trio.util.per_run import PerRun

log = logging.getLogger("kdc_trio.soon")


class Soon(PerRun):
    __slots__ = ("_calls", "_task", "running", "batches", "calls")

    def __init__(self) -> None:
        self._calls: list[Callable[[], None]] = []
        self._task: trio.lowlevel.Task | None = None  # set while it waits for calls
        self.running = False
        self.batches = 0  # wake-ups (each runs every call made since the last)
        self.calls = 0

    @classmethod
    def shared(cls) -> "Soon | None":
        """This trio run's instance (None outside a run)."""
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            return None
        return cls._of_run(token, "kdc_trio.soon")

    def call(self, fn: Callable[[], None]) -> bool:
        """Run `fn()` in the next scheduler batch; False (not queued) when the task has stopped."""
        if not self.running:
            return False
        self._calls.append(fn)
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)
        return True

    async def run(self) -> None:
        """Until cancelled; whatever is queued when it stops still runs."""
        self.running = True
        try:
            while True:
                if not self._calls:
                    self._task = trio.lowlevel.current_task()

                    def abort(_: object) -> trio.lowlevel.Abort:
                        self._task = None
                        return trio.lowlevel.Abort.SUCCEEDED

                    await trio.lowlevel.wait_task_rescheduled(abort)
                else:
                    await trio.lowlevel.cancel_shielded_checkpoint()  # let the callers' batch finish
                self._run_calls()
        finally:
            self.running = False
            self._task = None
            self._run_calls()

    def _run_calls(self) -> None:
        calls, self._calls = self._calls, []
        if not calls:
            return
        self.batches += 1
        self.calls += len(calls)
        for fn in calls:
            try:
                fn()
            except Exception:  # one connection's bug must not stop every other's writes
                log.exception("deferred call failed")
