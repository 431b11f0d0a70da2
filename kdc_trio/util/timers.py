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

An `Alarm` is a callback instead of a sleeping task: an idle SSE stream's heartbeat (10,000 idle
writers park on their outboxes with no cancel scope of their own; the timer wakes one only when
its heartbeat is due). Moving an alarm later (activity on the stream) costs no heap entry: the
entry, when it comes due, finds the later due and goes back in the heap once.

What leaves early (a cancelled sleeper, a cancelled alarm, an alarm moved earlier) leaves its heap
entry behind, skipped when it comes due. Such entries are counted, and once they are more than
half the heap (and at least `COMPACT_AT`) the heap is rebuilt without them: a token-expiry alarm
of a connection that closed after a second would otherwise stay in the heap for the token's
hour, and connection churn would grow the heap by its rate times that hour.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import Callable

import trio

from kdc_trio.util.per_run import PerRun

log = logging.getLogger("kdc_trio.timers")

RESOLUTION_S = 0.001
# Dead heap entries (see the module's doc) tolerated before a rebuild is considered: a rebuild is
# O(heap), paid once per at least this many cancellations (and never while most entries live).
COMPACT_AT = 256


class _Sleeper:
    __slots__ = ("task",)

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task: trio.lowlevel.Task | None = task


class Alarm:
    """`callback()` once `due` passes, when set with `Timers.set_alarm`; `Timers.cancel_alarm`
    drops it. Holds at most one live heap entry however often it is moved later."""

    __slots__ = ("due", "callback", "_at", "_timers")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.due = math.inf
        self.callback: Callable[[], None] | None = callback
        self._at = math.inf  # the time its live heap entry comes due (inf: none)
        self._timers: Timers | None = None  # whose heap holds that entry


class Timers(PerRun):
    def __init__(self, resolution: float = RESOLUTION_S) -> None:
        self.resolution = resolution
        self._heap: list[tuple[float, int, _Sleeper | Alarm]] = []
        self._order = itertools.count()
        self._scope: trio.CancelScope | None = None  # the timer's sleep, while it runs
        self.running = False
        self.wakeups = 0  # timer wake-ups (each serves every sleeper then due)
        self.served = 0   # sleeps served
        self._dead = 0    # heap entries that will be skipped when due (see the module's doc)
        self.compactions = 0

    @classmethod
    def shared(cls) -> "Timers":
        """This trio run's instance (its timer started as a system task on first use)."""
        return cls._of_run(trio.lowlevel.current_trio_token(), "kdc_trio.timers")

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
            self._note_dead()
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def set_alarm(self, alarm: Alarm, due: float) -> bool:
        """Have `alarm.callback()` called (from the timer task) once `due` passes, on the grid;
        False when the timer is not running (the caller waits with a timeout of its own)."""
        if not self.running:
            return False
        alarm.due = due
        at = max(due, math.ceil(due / self.resolution) * self.resolution)
        if at < alarm._at:  # earlier than its entry (or none yet): a new entry; the old one is skipped
            superseded, old = alarm._at != math.inf, alarm._timers
            alarm._at = at
            alarm._timers = self
            heapq.heappush(self._heap, (at, next(self._order), alarm))
            if superseded:  # counted once the heap says so (a rebuild now keeps the new entry only)
                old._note_dead()  # type: ignore[union-attr]
            scope = self._scope
            if scope is not None and at < scope.deadline:
                scope.deadline = at
        return True

    @staticmethod
    def cancel_alarm(alarm: Alarm) -> None:
        """No call; its entry is skipped when it comes due, or dropped by the next rebuild."""
        alarm.due = math.inf
        alarm.callback = None
        if alarm._at != math.inf:
            alarm._at = math.inf
            alarm._timers._note_dead()  # type: ignore[union-attr]

    def _note_dead(self) -> None:
        """One more heap entry left behind; rebuild the heap once they are most of it."""
        self._dead += 1
        heap = self._heap
        if self._dead >= COMPACT_AT and 2 * self._dead > len(heap):
            kept: list[tuple[float, int, _Sleeper | Alarm]] = []
            alarms: set[int] = set()  # an alarm cancelled and set again for the same time: one entry
            for entry in heap:
                at, _, owner = entry
                if type(owner) is Alarm:
                    if owner._at == at and id(owner) not in alarms:
                        alarms.add(id(owner))
                        kept.append(entry)
                elif owner.task is not None:
                    kept.append(entry)
            heap[:] = kept
            heapq.heapify(heap)
            self._dead = 0
            self.compactions += 1
            scope = self._scope
            if scope is not None:  # the first entry may now be later: the timer sleeps until it
                scope.deadline = heap[0][0] if heap else math.inf

    def _ring(self, alarm: Alarm, at: float, now: float) -> None:
        if at != alarm._at:  # superseded by an earlier entry, or cancelled
            self._dead -= 1
            return
        alarm._at = math.inf
        if alarm.callback is None or alarm.due == math.inf:
            return
        if alarm.due > now:  # moved later meanwhile: back in the heap, once
            self.set_alarm(alarm, alarm.due)
            return
        alarm.due = math.inf
        try:
            alarm.callback()
        except Exception:  # a bug in one callback must not stop every other timer
            log.exception("alarm callback failed")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The timer: until cancelled. When it stops, whoever still sleeps is woken (early)
        rather than left parked, and every set alarm is called (early)."""
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
                    at, _, sleeper = heapq.heappop(heap)
                    if type(sleeper) is Alarm:
                        self._ring(sleeper, at, now)
                    elif sleeper.task is not None:
                        trio.lowlevel.reschedule(sleeper.task)
                        sleeper.task = None
                        self.served += 1
                    else:
                        self._dead -= 1
        finally:
            self.running = False
            self._scope = None
            self._dead = 0
            while heap:
                sleeper = heapq.heappop(heap)[2]
                if type(sleeper) is Alarm:  # called early, as a sleeper is woken: set_alarm now says False
                    if sleeper._at != math.inf and sleeper.callback is not None and sleeper.due != math.inf:
                        sleeper._at = sleeper.due = math.inf
                        try:
                            sleeper.callback()
                        except Exception:
                            log.exception("alarm callback failed")
                elif sleeper.task is not None:
                    trio.lowlevel.reschedule(sleeper.task)
                    sleeper.task = None
