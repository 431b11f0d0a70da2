"""Cheap sleeps for many tasks that each wake often (a producer pacing its events).

`trio.sleep_until` costs a cancel scope per sleep and, when the deadline passes, a cancellation
delivered to the sleeper (an abort, an exception raised and caught): tens of µs of CPU, paid on
every event by a producer that paces itself. `Timers.sleep_until` parks the task with a heap
entry instead; one timer task wakes every sleeper whose deadline passed, with a single trio
sleep for all of them. Deadlines are served on a grid of `resolution` seconds (a sleeper wakes
at most that late), so however many sleepers there are, the timer task wakes at most 1/resolution
times a second.

`Timers.shared()` is one instance per trio run, its timer a system task (it lives as long as the
run; a sleeper cancelled meanwhile leaves at once). Outside a trio run's system nursery (or once
the timer stopped) a sleep is a plain `trio.sleep_until`.
"""

from __future__ import annotations

import heapq
import itertools
import math

import trio

RESOLUTION_S = 0.001


class _Sleeper:
    __slots__ = ("task",)

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task: trio.lowlevel.Task | None = task


class Timers:
    _by_run: "dict[object, Timers]" = {}

    def __init__(self, resolution: float = RESOLUTION_S) -> None:
        self.resolution = resolution
        self._heap: list[tuple[float, int, _Sleeper]] = []
        self._order = itertools.count()
        self._scope: trio.CancelScope | None = None  # the timer's sleep, while it runs
        self.running = False
        self.wakeups = 0  # timer wake-ups (each serves every sleeper then due)
        self.served = 0   # sleeps served

    @classmethod
    def shared(cls) -> "Timers":
        """This trio run's instance (its timer started as a system task on first use)."""
        token = trio.lowlevel.current_trio_token()
        timers = cls._by_run.get(token)
        if timers is None:
            timers = cls._by_run[token] = cls()
            timers.running = True  # sleeps queue at once; the timer serves them when it starts
            trio.lowlevel.spawn_system_task(timers._run_shared, token, name="kdc_trio.timers")
        return timers

    async def _run_shared(self, token: object) -> None:
        try:
            await self.run()
        finally:
            self._by_run.pop(token, None)

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(trio.current_time() + seconds)

    async def sleep_until(self, deadline: float) -> None:
        if not self.running:
            await trio.sleep_until(deadline)
            return
        if deadline <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        sleeper = _Sleeper(trio.lowlevel.current_task())
        # on the grid (sleepers share wake-ups), never before the deadline (float rounding)
        due = max(deadline, math.ceil(deadline / self.resolution) * self.resolution)
        heapq.heappush(self._heap, (due, next(self._order), sleeper))
        scope = self._scope
        if scope is not None and due < scope.deadline:
            scope.deadline = due

        def abort(_: object) -> trio.lowlevel.Abort:
            sleeper.task = None  # cancelled: its heap entry is skipped when it comes due
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The timer: until cancelled. When it stops, whoever still sleeps is woken (early)
        rather than left parked."""
        self.running = True
        task_status.started()
        heap = self._heap
        try:
            while True:
                with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self._scope:
                    await trio.sleep_forever()
                self._scope = None
                self.wakeups += 1
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    sleeper = heapq.heappop(heap)[2]
                    if sleeper.task is not None:
                        trio.lowlevel.reschedule(sleeper.task)
                        sleeper.task = None
                        self.served += 1
        finally:
            self.running = False
            self._scope = None
            while heap:
                sleeper = heapq.heappop(heap)[2]
                if sleeper.task is not None:
                    trio.lowlevel.reschedule(sleeper.task)
                    sleeper.task = None
