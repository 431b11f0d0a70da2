"""Admission under overload: shed new work by user type before the process falls over.

KDCube's `BackpressureManager` admits a chat request while the queue is under a share of its
capacity that depends on who asks: anonymous below 0.6, registered below 0.8, privileged below
the hard limit 0.95. Here pressure is the largest of three ratios: turns in the queue over
`KDC_TURN_QUEUE_SIZE` (shared through Redis), this process's open connections over its cap, and
the event loop's lag over `KDC_LOOP_LAG_MAX_MS`. Past a user type's threshold, its new turns and
new connections get 503 `overloaded` with Retry-After; connections already open are kept.

Lag and queue depth are sampled by one background task (`run`, owned by the gateway's nursery):
one sleep per interval, the lag is how late it woke; the check itself reads numbers, no I/O.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Awaitable, Callable

import trio

from kdc_trio.errors import ClientError

if TYPE_CHECKING:
    from kdc_trio.config import Settings

log = logging.getLogger("kdc_trio.admission")

# Retry-After of a shed request: about the time a queue of short turns takes to move.
OVERLOADED_RETRY_AFTER_S = 5
# Longest wait for the queue's depth (a Redis XLEN); past it the last sample stands.
DEPTH_TIMEOUT_S = 2.0


class Overloaded(ClientError):
    """503 `overloaded` with Retry-After: shed by admission (`limit` names the threshold)."""

    def __init__(self, user_type: str, source: str, pressure: float, threshold: float, limit: str) -> None:
        super().__init__(503, "overloaded",
                         f"the gateway is under load ({source} at {pressure:.0%}); {user_type} traffic is admitted "
                         f"below {threshold:.0%}", retry_after=OVERLOADED_RETRY_AFTER_S, limit=limit)
        self.error_type = "backpressure"  # KDCube's name of the refusal (its acks' error_type, its event type)


class Admission:
    def __init__(self, settings: "Settings", *, queue_depth: Callable[[], Awaitable[int]],
                 connections: Callable[[], tuple[int, int]]) -> None:
        s = settings
        self.thresholds = {
            "anonymous": (s.admission_anonymous, "KDC_ADMISSION_ANONYMOUS_THRESHOLD"),
            "registered": (s.admission_registered, "KDC_ADMISSION_REGISTERED_THRESHOLD"),
            "privileged": (s.admission_hard, "KDC_ADMISSION_HARD_THRESHOLD"),
        }
        self.interval_s = s.admission_interval_ms / 1000
        self.lag_max_s = s.loop_lag_max_ms / 1000
        self.queue_capacity = max(1, s.turn_queue_size)
        self._queue_depth = queue_depth
        self._connections = connections  # (open, cap) of this process, read at each check
        self.lag_s = 0.0
        self.queue_depth = 0
        self.shed = {"turn": 0, "connect": 0}  # refusals (503) by action
        self._depth_failing = False

    def pressure(self) -> tuple[float, str]:
        """(the largest ratio, its source): `queue`, `connections` or `loop_lag`."""
        open_, cap = self._connections()
        return max((self.queue_depth / self.queue_capacity, "queue"),
                   (open_ / cap if cap > 0 else 0.0, "connections"),
                   (self.lag_s / self.lag_max_s if self.lag_max_s > 0 else 0.0, "loop_lag"))

    def check(self, user_type: str, action: str = "turn") -> None:
        """Raise Overloaded when `user_type`'s new work is shed at the current pressure."""
        threshold, setting = self.thresholds.get(user_type, self.thresholds["anonymous"])
        hard, hard_setting = self.thresholds["privileged"]
        if hard < threshold:  # the hard limit holds for everyone
            threshold, setting = hard, hard_setting
        pressure, source = self.pressure()
        if pressure >= threshold:
            self.shed[action] = self.shed.get(action, 0) + 1
            raise Overloaded(user_type, source, pressure, threshold, setting)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample the loop's lag and the queue's depth every interval, for the gateway's life."""
        task_status.started()
        while True:
            started = trio.current_time()
            await trio.sleep(self.interval_s)
            self.lag_s = max(0.0, trio.current_time() - started - self.interval_s)
            await self._sample_depth()

    async def _sample_depth(self) -> None:
        # A failure boundary: Redis gone keeps the last sample, told once when it starts failing.
        try:
            with trio.fail_after(DEPTH_TIMEOUT_S):
                self.queue_depth = await self._queue_depth()
        except Exception as exc:
            if not self._depth_failing:
                log.warning("admission: the turn queue's depth cannot be read (%s); keeping %d", exc,
                            self.queue_depth)
            self._depth_failing = True
        else:
            self._depth_failing = False

    def statistics(self) -> dict:
        pressure, source = self.pressure()
        return {"pressure": round(pressure, 3), "source": source, "loop_lag_s": round(self.lag_s, 4),
                "queue_depth": self.queue_depth, "shed": dict(self.shed)}
