"""Rate limits per user type: a burst budget over a sliding window and a budget per clock hour.

KDCube's `RateLimiter` (infra/gateway/rate_limiter.py) counts a session's requests in a sliding
burst window (a sorted set) and in a counter per clock hour, and answers 429 with Retry-After =
the burst window, or 3600 for the hour. Here the same two windows, with three differences, all
stated in the README: a subject is a session *and* its client address (an anonymous client that
drops its session keeps its address's budget); a refused attempt is not counted (a client that
waits its Retry-After gets in, it is not locked out by its own retries); and Retry-After is the
time until a slot frees (the oldest burst entry leaving the window, or the hour's end), not the
whole window. `burst` requests are allowed per window (KDCube lets `burst + 1` through).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from kdc_trio.errors import ClientError

if TYPE_CHECKING:
    from kdc_trio.config import Settings

HOUR_S = 3600
# Subjects the memory limiter remembers; past it the least recently seen is forgotten (its budget
# starts afresh). 100k subjects × a burst of ≤ 100 timestamps stays within tens of MB.
MEMORY_MAX_SUBJECTS = 100_000

USER_TYPES = ("anonymous", "registered", "privileged")


@dataclass(frozen=True)
class RateRule:
    """`burst` per `window_s` (sliding) and `hourly` per clock hour; 0 = that window is not limited."""

    burst: int
    hourly: int
    window_s: float

    @property
    def limited(self) -> bool:
        return self.burst > 0 or self.hourly > 0

    def scaled(self, factor: float) -> "RateRule":
        return RateRule(burst=_scale(self.burst, factor), hourly=_scale(self.hourly, factor), window_s=self.window_s)


def _scale(n: int, factor: float) -> int:
    return max(1, math.ceil(n * factor)) if n > 0 else 0


@dataclass(frozen=True)
class Subject:
    """One budget: `key` names it (session or address, per action), `rule` bounds it."""

    key: str
    rule: RateRule


class RateLimited(ClientError):
    """429 `rate_limited`, with Retry-After; `limit` names the setting that refused."""

    def __init__(self, action: str, user_type: str, retry_after: int, limit: str) -> None:
        super().__init__(429, "rate_limited",
                         f"too many {'turns' if action == 'turn' else 'new connections'} for a {user_type} "
                         f"client; retry in {retry_after}s", retry_after=retry_after, limit=limit)
        self.action = action
        self.error_type = "rate_limit"  # KDCube's name of the refusal (its acks' error_type, its event type)


class RateLimiter(Protocol):
    async def hit(self, subjects: Sequence[Subject]) -> float:
        """Count one request against every subject, atomically: 0 when all had room (all are
        charged), else the seconds until every one of them has (none is charged)."""
        ...


class RatePolicy:
    """Which budgets a request of a user type, for an action (`turn` | `connect`), is charged to."""

    def __init__(self, settings: "Settings") -> None:
        s = settings
        window = s.rate_burst_window_s
        self.turn = {
            "anonymous": RateRule(s.rate_anonymous_burst, s.rate_anonymous_hourly, window),
            "registered": RateRule(s.rate_registered_burst, s.rate_registered_hourly, window),
            "privileged": RateRule(s.rate_privileged_burst, s.rate_privileged_hourly, window),
        }
        # (action, user type) -> (the session's rule, the address's rule or None); None: not limited.
        self._rules: dict[tuple[str, str], tuple[RateRule, RateRule | None] | None] = {}
        for user_type, rule in self.turn.items():
            for action, factor in (("turn", 1.0), ("connect", s.rate_connect_factor)):
                scaled = rule.scaled(factor) if factor > 0 else None
                if scaled is None or not scaled.limited:
                    self._rules[(action, user_type)] = None
                    continue
                by_address = scaled.scaled(s.rate_address_factor) if s.rate_address_factor > 0 else None
                self._rules[(action, user_type)] = (scaled, by_address)

    def subjects(self, action: str, user_type: str, session_id: str, address: str) -> list[Subject]:
        rules = self._rules.get((action, user_type), self._rules.get((action, "anonymous")))
        if rules is None:
            return []
        session_rule, address_rule = rules
        out = [Subject(f"{action}:s:{session_id}", session_rule)]
        if address_rule is not None and address:
            out.append(Subject(f"{action}:a:{user_type}:{address}", address_rule))
        return out

    @staticmethod
    def setting_for(user_type: str, rule: RateRule, retry_after: float) -> str:
        """The setting a refusal names: the hour's when only the hour's end frees a slot."""
        which = "HOURLY" if retry_after > rule.window_s else "BURST"
        return f"KDC_RATE_LIMIT_{user_type.upper()}_{which}"


def retry_seconds(wait_s: float) -> int:
    """Retry-After is whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))


class MemoryRateLimiter:
    """One process's budgets (embedded mode); the Redis limiter keeps the same rules for many."""

    def __init__(self, *, clock: Callable[[], float] = time.time, max_subjects: int = MEMORY_MAX_SUBJECTS) -> None:
        self.clock = clock
        self.max_subjects = max_subjects
        # key -> (burst timestamps, hour index, count in that hour)
        self._state: OrderedDict[str, tuple[deque[float], int, int]] = OrderedDict()

    async def hit(self, subjects: Sequence[Subject]) -> float:
        import trio

        await trio.lowlevel.checkpoint()
        return self.hit_nowait(subjects)

    def hit_nowait(self, subjects: Sequence[Subject]) -> float:
        now = self.clock()
        hour = int(now // HOUR_S)
        wait = 0.0
        states = []
        for sub in subjects:
            stamps, h, count = self._state.get(sub.key) or (deque(), hour, 0)
            if h != hour:
                h, count = hour, 0
            rule = sub.rule
            while stamps and stamps[0] <= now - rule.window_s:
                stamps.popleft()
            if rule.burst > 0 and len(stamps) >= rule.burst:
                wait = max(wait, stamps[len(stamps) - rule.burst] + rule.window_s - now)
            if rule.hourly > 0 and count >= rule.hourly:
                wait = max(wait, (hour + 1) * HOUR_S - now)
            states.append((sub, stamps, h, count))
        if wait > 0:
            return wait
        for sub, stamps, h, count in states:
            if sub.rule.burst > 0:
                stamps.append(now)
            self._state[sub.key] = (stamps, h, count + 1)
            self._state.move_to_end(sub.key)
        while len(self._state) > self.max_subjects:
            self._state.popitem(last=False)
        return 0.0
