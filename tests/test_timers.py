"""kdc_trio/util/timers.py on trio's MockClock (time jumps; no wall-clock assertion): every sleeper
wakes at its deadline rounded up to the grid, never before; sleepers due together share one
timer wake-up; a cancelled sleeper leaves at once; a stopped timer wakes whoever still sleeps."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from kdc_trio.util.timers import COMPACT_AT, Alarm, Timers


@pytest.fixture
def clock():
    return trio.testing.MockClock(autojump_threshold=0)


async def test_sleepers_wake_at_their_deadline_on_the_grid_and_share_wakeups(clock):
    timers = Timers(resolution=0.01)
    woke: dict[int, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(timers.run)
        start = trio.current_time()

        async def sleeper(i: int, delay: float) -> None:
            await timers.sleep_until(start + delay)
            woke[i] = trio.current_time()

        delays = {i: 0.001 * (i % 37) + 0.0005 * (i % 5) + 0.02 for i in range(300)}
        for i, d in delays.items():
            nursery.start_soon(sleeper, i, d)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    for i, d in delays.items():
        due = max(start + d, math.ceil((start + d) / 0.01) * 0.01)
        assert woke[i] >= start + d, "never before its deadline"
        assert woke[i] == pytest.approx(due, abs=1e-9), (i, woke[i], due)
    assert timers.served == 300
    assert timers.wakeups <= len({math.ceil((start + d) / 0.01) for d in delays.values()}) + 1


async def test_a_cancelled_sleeper_leaves_at_once_and_its_entry_is_skipped(clock):
    timers = Timers(resolution=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(timers.run)
        with trio.move_on_after(0.05) as scope:
            await timers.sleep(10)
        assert scope.cancelled_caught
        assert trio.current_time() == pytest.approx(0.05, abs=1e-9), "left at its scope's deadline, not at 10 s"
        await trio.sleep(11)
        assert timers.served == 0
        nursery.cancel_scope.cancel()


async def test_a_stopped_timer_wakes_its_sleepers_and_later_sleeps_are_plain(clock):
    timers = Timers()
    woke = []
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as timer_nursery:
            await timer_nursery.start(timers.run)

            async def sleeper() -> None:
                await timers.sleep(100)
                woke.append(trio.current_time())

            outer.start_soon(sleeper)
            await trio.sleep(1)
            timer_nursery.cancel_scope.cancel()
        await trio.sleep(0.001)
        assert woke and woke[0] < 100, "woken (early) rather than left parked"
    t0 = trio.current_time()
    await timers.sleep(2.5)  # the timer is gone: trio.sleep_until
    assert trio.current_time() - t0 == pytest.approx(2.5)


async def test_shared_timers_are_one_per_run_and_serve_sleeps(clock):
    a, b = Timers.shared(), Timers.shared()
    assert a is b
    await trio.sleep(0)  # the system task starts
    t0 = trio.current_time()
    await a.sleep(0.0042)
    assert trio.current_time() >= t0 + 0.0042 and a.served == 1


async def test_an_alarm_calls_at_its_due_moves_later_without_a_new_entry_and_cancels(clock):
    timers = Timers(resolution=0.01)
    calls: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(timers.run)
        alarm = Alarm(lambda: calls.append(trio.current_time()))
        t0 = trio.current_time()
        assert timers.set_alarm(alarm, t0 + 1.0)
        await trio.sleep(0.5)
        assert timers.set_alarm(alarm, t0 + 2.0)  # activity: later, no second heap entry
        assert len(timers._heap) == 1
        await trio.sleep(3)
        assert calls == [pytest.approx(t0 + 2.0, abs=1e-9)], "once, at the later due"
        timers.set_alarm(alarm, t0 + 4.0)
        timers.set_alarm(alarm, t0 + 3.7)  # earlier: a new entry, the old one skipped when due
        await trio.sleep(2)
        assert calls[1:] == [pytest.approx(t0 + 3.7, abs=1e-9)]
        timers.set_alarm(alarm, trio.current_time() + 1)
        Timers.cancel_alarm(alarm)
        await trio.sleep(2)
        assert len(calls) == 2 and not timers._heap
        nursery.cancel_scope.cancel()


async def test_a_stopped_timer_calls_its_alarms_early_and_refuses_new_ones(clock):
    timers = Timers()
    calls = []
    async with trio.open_nursery() as timer_nursery:
        await timer_nursery.start(timers.run)
        timers.set_alarm(Alarm(lambda: calls.append(1)), trio.current_time() + 100)
        await trio.sleep(1)
        timer_nursery.cancel_scope.cancel()
    assert calls == [1]
    assert not timers.set_alarm(Alarm(lambda: None), trio.current_time() + 1)


def _dead_entries(timers: Timers) -> int:
    """Heap entries the timer will skip (counted by hand, to check the timer's own count)."""
    seen: set[int] = set()
    dead = 0
    for at, _, owner in timers._heap:
        if type(owner) is Alarm:
            if owner._at == at and id(owner) not in seen:
                seen.add(id(owner))
            else:
                dead += 1
        elif owner.task is None:
            dead += 1
    return dead


async def test_cancelled_alarms_do_not_pile_up_in_the_heap(clock):
    """Connection churn: each connection's alarm (a token's hour) is cancelled a moment later.
    The heap stays within twice the live alarms plus COMPACT_AT, and the live ones still ring."""
    timers = Timers(resolution=0.01)
    calls: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(timers.run)
        t0 = trio.current_time()
        keep = []
        for i in range(20_000):
            alarm = Alarm(lambda i=i: calls.append(i))
            timers.set_alarm(alarm, t0 + 3600 + i % 100)
            if i % 100 == 0:
                keep.append(i)
            else:
                Timers.cancel_alarm(alarm)
            assert len(timers._heap) <= 2 * len(keep) + COMPACT_AT
        assert timers.compactions > 0
        assert timers._dead == _dead_entries(timers)
        await trio.sleep(3700)
        assert sorted(calls) == keep, "every live alarm rang, no cancelled one"
        assert not timers._heap and timers._dead == 0
        nursery.cancel_scope.cancel()


async def test_cancelled_sleepers_do_not_pile_up_in_the_heap(clock):
    timers = Timers(resolution=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(timers.run)
        woke = []

        async def long_sleeper() -> None:
            await timers.sleep(1000)
            woke.append(trio.current_time())

        nursery.start_soon(long_sleeper)
        for _ in range(3000):
            with trio.move_on_after(0.001):
                await timers.sleep(3600)
            assert len(timers._heap) <= 2 + COMPACT_AT
        assert timers.compactions > 0 and timers._dead == _dead_entries(timers)
        await trio.sleep(1000)
        assert woke and woke[0] >= 1000, "the sleeper left in the heap still wakes at its time"
        nursery.cancel_scope.cancel()


async def test_alarms_ring_once_at_their_due_through_moves_cancels_and_rebuilds(clock):
    """Random sets (later, earlier), cancels and re-sets of many alarms, with rebuilds between:
    each alarm rings exactly once per due it last had, at that due on the grid, never when
    cancelled; the timer's dead-entry count matches the heap's."""
    import random

    rng = random.Random(7)
    timers = Timers(resolution=0.01)
    rang: dict[int, list[float]] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(timers.run)
        alarms = [Alarm(lambda i=i: rang.setdefault(i, []).append(trio.current_time())) for i in range(400)]
        expected: dict[int, float | None] = {}

        async def check_rings(seconds: float, step: object) -> None:
            before = {i: len(v) for i, v in rang.items()}
            await trio.sleep(seconds)
            for i, v in rang.items():
                for at in v[before.get(i, 0):]:
                    assert expected[i] is not None and at == pytest.approx(expected[i], abs=1e-9), (step, i)
                    expected[i] = None  # rang: no second call for that due

        for step in range(20):
            now = trio.current_time()
            for _ in range(600):
                i = rng.randrange(len(alarms))
                alarm = alarms[i]
                if rng.random() < 0.3:
                    Timers.cancel_alarm(alarm)
                    expected[i] = None
                else:
                    if alarm.callback is None:  # cancelled: made anew, as a connection would
                        alarm.callback = lambda i=i: rang.setdefault(i, []).append(trio.current_time())
                    due = now + rng.choice([0.5, 1.0, 2.0, 5.0]) + rng.randrange(100) / 1000
                    timers.set_alarm(alarm, due)
                    expected[i] = max(due, math.ceil(due / 0.01) * 0.01)
            assert timers._dead == _dead_entries(timers)
            await check_rings(0.3, step)
            assert timers._dead == _dead_entries(timers)
        await check_rings(10, "end")
        assert all(v is None for v in expected.values()), "every alarm left set rang"
        assert not timers._heap and timers._dead == 0
        assert timers.compactions > 0
        nursery.cancel_scope.cancel()
