"""The rate limiter's rules (memory and real Redis, one table of cases) and admission's thresholds."""

from __future__ import annotations

import time

import pytest
import trio

from kdc_trio.protect.admission import Admission, Overloaded
from kdc_trio.protect.guard import Guard
from kdc_trio.protect.ratelimit import MemoryRateLimiter, RateLimited, RatePolicy, RateRule, Subject
from kdc_trio.protect.redis_ratelimit import RedisRateLimiter
from kdc_trio.redis.client import RedisClient
from tests.support.gateway import test_settings
from tests.support.redis_server import redis_server

T0 = 1_800_000_000.0 + 600  # ten minutes into a clock hour


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now



@pytest.fixture(params=["memory", "redis"])
async def limiter(request):
    clock = Clock()
    if request.param == "memory":
        yield MemoryRateLimiter(clock=clock), clock, None
        return
    with redis_server() as srv:
        client = RedisClient(srv.url)
        try:
            yield RedisRateLimiter(client, prefix="t", clock=clock), clock, client
        finally:
            await client.aclose()


async def test_burst_then_a_slot_frees_when_the_oldest_leaves_the_window(limiter):
    lim, clock, _ = limiter
    sub = [Subject("turn:s:a", RateRule(burst=5, hourly=50, window_s=60))]
    for i in range(5):
        assert await lim.hit(sub) == 0, i
        clock.now += 1
    wait = await lim.hit(sub)  # at T0+5: the first admission (T0) leaves at T0+60
    assert wait == pytest.approx(55, abs=0.01)
    assert await lim.hit(sub) == pytest.approx(55, abs=0.01), "a refusal charges nothing"
    clock.now = T0 + 60.001
    assert await lim.hit(sub) == 0
    assert await lim.hit(sub) > 0


async def test_the_hour_budget_refuses_until_the_hour_ends(limiter):
    lim, clock, _ = limiter
    sub = [Subject("turn:s:h", RateRule(burst=0, hourly=3, window_s=60))]
    for _ in range(3):
        assert await lim.hit(sub) == 0
    assert await lim.hit(sub) == pytest.approx(3000, abs=0.01)  # 50 minutes to the hour's end
    clock.now = T0 + 3000
    assert await lim.hit(sub) == 0, "a new clock hour, a new budget"


async def test_all_subjects_or_none_are_charged(limiter):
    lim, clock, _ = limiter
    rule = RateRule(burst=2, hourly=0, window_s=60)
    address = Subject("turn:a:anonymous:10.0.0.1", RateRule(burst=3, hourly=0, window_s=60))
    one, two = Subject("turn:s:one", rule), Subject("turn:s:two", rule)
    assert await lim.hit([one, address]) == 0
    assert await lim.hit([one, address]) == 0
    assert await lim.hit([one, address]) > 0, "session one is out"
    assert await lim.hit([two, address]) == 0, "its refusal did not charge the address"
    assert await lim.hit([two, address]) > 0, "a second session shares the address's budget"


async def test_one_evalsha_per_check():
    clock = Clock()
    with redis_server() as srv:
        client = RedisClient(srv.url)
        try:
            lim = RedisRateLimiter(client, prefix="t", clock=clock)
            policy = RatePolicy(test_settings(rate_limits=True))
            subjects = policy.subjects("turn", "anonymous", "sess", "10.0.0.1")
            assert len(subjects) == 2
            await lim.hit(subjects)  # loads the script (EVALSHA → NOSCRIPT → EVAL)
            await client.execute("CONFIG", "RESETSTAT")
            for _ in range(4):
                await lim.hit(subjects)
            stats = (await client.execute("INFO", "commandstats")).decode()
        finally:
            await client.aclose()
    calls = {line.split(":")[0]: line for line in stats.splitlines() if line.startswith("cmdstat_")}
    assert "calls=4," in calls["cmdstat_evalsha"], calls
    # Redis counts the script's own commands too; what a client may send is only the script call.
    assert not {"cmdstat_eval", "cmdstat_multi", "cmdstat_exec"} & set(calls), calls


def test_policy_by_user_type_action_and_address():
    s = test_settings(rate_limits=True)
    p = RatePolicy(s)
    anon = p.subjects("turn", "anonymous", "s1", "1.2.3.4")
    assert [(x.key, x.rule.burst, x.rule.hourly) for x in anon] == [
        ("turn:s:s1", 5, 50), ("turn:a:anonymous:1.2.3.4", 20, 200)]
    assert [(x.rule.burst, x.rule.hourly) for x in p.subjects("turn", "registered", "s", "a")][0] == (20, 500)
    assert [(x.rule.burst, x.rule.hourly) for x in p.subjects("turn", "privileged", "s", "a")][0] == (100, 0)
    assert [(x.rule.burst, x.rule.hourly) for x in p.subjects("connect", "anonymous", "s", "a")][0] == (10, 100)
    off = RatePolicy(test_settings(rate_limits=True, rate_connect_factor=0, rate_address_factor=0))
    assert off.subjects("connect", "anonymous", "s", "a") == []
    assert len(off.subjects("turn", "anonymous", "s", "a")) == 1


def test_memory_limiter_forgets_the_least_recent_subject_past_its_cap():
    lim = MemoryRateLimiter(clock=Clock(), max_subjects=3)
    rule = RateRule(burst=1, hourly=0, window_s=60)
    for k in "abcd":
        assert lim.hit_nowait([Subject(k, rule)]) == 0
    assert lim.hit_nowait([Subject("d", rule)]) > 0
    assert lim.hit_nowait([Subject("a", rule)]) == 0, "a was forgotten"
    assert len(lim._state) == 3


async def test_the_guard_answers_429_with_retry_after_and_the_setting():
    guard = Guard(test_settings(rate_limits=True, admission=False), limiter=MemoryRateLimiter(clock=Clock()),
                  admission=None)
    for _ in range(5):
        await guard.admit("turn", "anonymous", "s", "a")
    with pytest.raises(RateLimited) as info:
        await guard.admit("turn", "anonymous", "s", "a")
    e = info.value
    assert (e.status, e.error, e.retry_after, e.limit) == (429, "rate_limited", 60, "KDC_RATE_LIMIT_ANONYMOUS_BURST")
    for _ in range(6):
        await guard.admit("turn", "registered", "r", "a")  # same address, another user type


class Broken:
    async def hit(self, subjects):
        raise ConnectionError("redis is gone")


async def test_a_limiter_that_cannot_answer_lets_requests_through():
    guard = Guard(test_settings(rate_limits=True), limiter=Broken(), admission=None)
    for _ in range(10):
        await guard.admit("turn", "anonymous", "s", "a")
    assert guard.check_failures == 10


def _admission(depth=0, conns=(0, 100), **kw):
    a = Admission(test_settings(admission=True, turn_queue_size=100, **kw), queue_depth=None,
                  connections=lambda: conns)
    a.queue_depth = depth
    return a


@pytest.mark.parametrize("depth,shed", [
    (59, set()), (60, {"anonymous"}), (79, {"anonymous"}), (80, {"anonymous", "registered"}),
    (94, {"anonymous", "registered"}), (95, {"anonymous", "registered", "privileged"}),
])
def test_admission_sheds_anonymous_first_then_registered_then_privileged(depth, shed):
    a = _admission(depth)
    refused = set()
    for user_type in ("anonymous", "registered", "privileged"):
        try:
            a.check(user_type)
        except Overloaded as exc:
            assert (exc.status, exc.error, exc.retry_after) == (503, "overloaded", 5)
            refused.add(user_type)
    assert refused == shed


def test_every_pressure_source_counts():
    assert _admission(conns=(85, 100)).pressure() == (0.85, "connections")
    a = _admission()
    a.lag_s = 0.7
    assert a.pressure() == (0.7, "loop_lag")
    with pytest.raises(Overloaded) as info:
        a.check("anonymous")
    assert "loop_lag" in info.value.detail and info.value.limit == "KDC_ADMISSION_ANONYMOUS_THRESHOLD"


async def test_the_lag_monitor_sees_a_blocked_loop_and_samples_the_queue():
    depth = 0

    async def queue_depth():
        await trio.lowlevel.checkpoint()
        return depth

    a = Admission(test_settings(admission=True, admission_interval_ms=20, turn_queue_size=10),
                  queue_depth=queue_depth, connections=lambda: (0, 100))
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        depth = 7
        await trio.sleep(0.005)
        time.sleep(0.3)  # the loop is blocked: the monitor's next wake-up is late by at least 0.28 s
        with trio.fail_after(10):
            while a.lag_s < 0.25:
                await trio.sleep(0.01)
        assert a.queue_depth == 7
        nursery.cancel_scope.cancel()
