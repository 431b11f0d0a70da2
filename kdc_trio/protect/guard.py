"""The one check the transports make before a new turn or a new connection: admission, then rates.

Admission first: it reads numbers (no I/O), and a request it sheds is not charged to the
client's rate budget. Then one rate-limiter call (one Lua call through Redis) for the session's
and the address's budgets together. A limiter that cannot answer (Redis down, or slower than
`CHECK_TIMEOUT_S`) lets the request through and says so once: the protections must not turn a
Redis blip into an outage of their own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from kdc_trio.protect.admission import Admission
from kdc_trio.protect.ratelimit import RateLimited, RateLimiter, RatePolicy, retry_seconds

if TYPE_CHECKING:
    from kdc_trio.config import Settings

log = logging.getLogger("kdc_trio.protect")

# Longest a rate check may wait for Redis before the request is let through.
CHECK_TIMEOUT_S = 2.0


class Guard:
    def __init__(self, settings: "Settings", *, limiter: RateLimiter | None, admission: Admission | None) -> None:
        self.policy = RatePolicy(settings)
        self.limiter = limiter if settings.rate_limits else None
        self.admission = admission if settings.admission else None
        self.rate_limited = {"turn": 0, "connect": 0}  # refusals (429) by action
        self.check_failures = 0
        self._failing = False

    async def admit(self, action: str, user_type: str, session_id: str, address: str) -> None:
        """Raise Overloaded (503) or RateLimited (429) for a new `turn` or `connect`; else return."""
        if self.admission is not None:
            self.admission.check(user_type, action)
        if self.limiter is None:
            return
        subjects = self.policy.subjects(action, user_type, session_id, address)
        if not subjects:
            return
        wait = await self._hit(subjects)
        if wait > 0:
            self.rate_limited[action] = self.rate_limited.get(action, 0) + 1
            retry = retry_seconds(wait)
            raise RateLimited(action, user_type, retry, self.policy.setting_for(user_type, subjects[0].rule, wait))

    async def _hit(self, subjects: list) -> float:
        assert self.limiter is not None
        try:
            with trio.fail_after(CHECK_TIMEOUT_S):
                wait = await self.limiter.hit(subjects)
        except Exception as exc:  # failure boundary: let the request through, say so once
            self.check_failures += 1
            if not self._failing:
                log.warning("rate limits not checked (%s: %s): requests pass until the limiter answers",
                            type(exc).__name__, exc)
            self._failing = True
            return 0.0
        if self._failing:
            log.info("rate limits checked again")
            self._failing = False
        return wait

    def statistics(self) -> dict:
        out = {"rate_limited": dict(self.rate_limited), "rate_check_failures": self.check_failures}
        if self.admission is not None:
            out.update(self.admission.statistics())
        return out
