"""kdc_trio/util/batch_queue.py: bounded, never blocks a producer, a batch per wake-up."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from kdc_trio.util.batch_queue import BatchQueue


def test_bounded_put_keeps_nothing_when_full():
    q: BatchQueue[int] = BatchQueue(3)
    assert [q.put_nowait(i) for i in range(5)] == [True, True, True, False, False]
    assert q.take_nowait() == [0, 1, 2] and len(q) == 0
    assert q.extend_nowait([1, 2]) and not q.extend_nowait([3, 4]) and q.take_nowait() == [1, 2]
    assert q.statistics() == {"queued": 0, "maxlen": 3, "taken": 5, "waiting_tasks": 0, "closed": False}
    with pytest.raises(ValueError):
        BatchQueue(0)


def test_closed_refuses_puts_but_keeps_what_was_queued():
    q: BatchQueue[str] = BatchQueue(3)
    q.put_nowait("a")
    q.close()
    assert not q.put_nowait("b") and not q.extend_nowait(["c"])
    assert q.take_nowait() == ["a"]


async def test_one_wake_up_takes_everything_that_arrived():
    q: BatchQueue[int] = BatchQueue(100)
    batches: list[list[int]] = []

    async def consumer() -> None:
        while len(batches) < 2:
            batches.append(await q.take_batch())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(10):
            q.put_nowait(i)  # no checkpoint between puts: one wake-up
        await trio.testing.wait_all_tasks_blocked()
        q.put_nowait(10)
    assert batches == [list(range(10)), [10]]


async def test_take_batch_times_out_empty_and_close_wakes(autojump_clock):
    q: BatchQueue[int] = BatchQueue(4)
    assert await q.take_batch(5.0) == []
    assert trio.current_time() == pytest.approx(5.0)
    got: list = []

    async def waiter() -> None:
        got.append(await q.take_batch())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        q.close()
    assert got == [[]]


async def test_several_getters_each_take_one():
    q: BatchQueue[int] = BatchQueue(10)
    got: list[int] = []

    async def getter() -> None:
        got.append(await q.get())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(getter)
        await trio.testing.wait_all_tasks_blocked()
        q.put_nowait(1)
        await trio.testing.wait_all_tasks_blocked()
        q.put_nowait(2)
        q.put_nowait(3)
    assert sorted(got) == [1, 2, 3] and len(q) == 0


async def test_get_on_a_closed_empty_queue_ends():
    q: BatchQueue[int] = BatchQueue(1)
    q.close()
    with pytest.raises(trio.EndOfChannel):
        await q.get()


async def test_wake_returns_a_waiter_without_an_item():
    q: BatchQueue[int] = BatchQueue(1)
    woke = trio.Event()

    async def waiter() -> None:
        await q.wait_nonempty()
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        q.wake()
    assert woke.is_set() and len(q) == 0


async def test_a_put_wakes_one_idle_getter_not_all():
    q: BatchQueue[int] = BatchQueue(10)
    got: list[int] = []

    async def getter() -> None:
        got.append(await q.get())

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(getter)
        await trio.testing.wait_all_tasks_blocked()
        q.put_nowait(1)
        assert q.statistics()["waiting_tasks"] == 99  # one woken, 99 left parked (no thundering herd)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [1] and q.statistics()["waiting_tasks"] == 99
        nursery.cancel_scope.cancel()


async def test_a_waiter_that_timed_out_is_not_counted(autojump_clock):
    q: BatchQueue[int] = BatchQueue(10)
    assert await q.take_batch(1.0) == []  # parked, then timed out
    assert q._parked == 0  # else every later put pays an unpark() call for a waiter that left
    got: list = []

    async def consumer() -> None:
        got.append(await q.take_batch())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        q.put_nowait(7)  # must wake the live consumer, not a stale count
    assert got == [[7]]


def test_the_owner_may_rewrite_what_is_queued_but_never_grow_it():
    q: BatchQueue[int] = BatchQueue(3)
    assert q.last() is None
    q.extend_nowait([1, 2])
    q.replace_last(5)
    assert q.last() == 5
    q.rewrite(lambda items: [sum(items)])
    assert len(q) == 1 and q.put_nowait(9) and q.take_nowait() == [6, 9]
    q.extend_nowait([1, 2])
    with pytest.raises(ValueError):
        q.rewrite(lambda items: [*items, 3, 4])
    assert q.take_nowait() == [1, 2]


async def test_wait_empty_returns_when_a_take_empties_the_queue_or_on_close():
    q: BatchQueue[int] = BatchQueue(3)
    await q.wait_empty()  # empty already: returns (after a checkpoint)
    q.put_nowait(1)
    done = []

    async def waiter():
        await q.wait_empty()
        done.append(len(q))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        q.put_nowait(2)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []  # a put does not wake it
        assert q.take_nowait() == [1, 2]
    assert done == [0]
    q.put_nowait(3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        q.close()
    assert done == [0, 1]


async def test_a_woken_getter_cancelled_before_it_takes_hands_its_wake_up_on():
    """A put wakes one parked getter; if that one is cancelled before it takes the item, another
    parked getter must be woken (before: the item waited for the next put)."""
    q: BatchQueue[str] = BatchQueue(10)
    got: list[tuple[str, str]] = []
    first = trio.CancelScope()

    async def getter(name: str, scope: trio.CancelScope) -> None:
        with scope:
            got.append((name, await q.get()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(getter, "g1", first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(getter, "g2", trio.CancelScope())
        await trio.testing.wait_all_tasks_blocked()
        assert q.put_nowait("x")  # wakes g1, the first parked
        first.cancel()  # before g1 runs: it never takes "x"
        await trio.testing.wait_all_tasks_blocked()
        assert got == [("g2", "x")] and len(q) == 0
        nursery.cancel_scope.cancel()


async def test_a_lone_consumer_without_timeout_parks_bare_and_leaves_cleanly_when_cancelled():
    q: BatchQueue[int] = BatchQueue(10)
    got: list = []

    async def consumer() -> None:
        got.append(await q.take_batch())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        assert q._waiter is not None and q._lot is None and q.statistics()["waiting_tasks"] == 1
        q.put_nowait(1)
        q.put_nowait(2)
    assert got == [[1, 2]] and q._waiter is None
    with trio.move_on_after(0.01):
        await q.wait_nonempty()
    assert q._waiter is None, "a cancelled waiter is forgotten"
    assert q.put_nowait(3)


async def test_a_turn_handed_back_is_first_in_line_even_in_a_full_queue():
    """MemoryTurnQueue.release (the runner hands a turn back when its end could not be told):
    the turn goes first, past the bound, with its attempt counted; a waiting get takes it."""
    from kdc_trio.processor.queue import MemoryTurnQueue
    from kdc_trio.processor.turn import Turn

    q = MemoryTurnQueue(2)
    first, second, back = (Turn.__new__(Turn) for _ in range(3))
    back.attempt = 1
    await q.put(first)
    await q.put(second)
    q.release(back)
    assert back.attempt == 2 and await q.depth() == 3
    assert [await q.get() for _ in range(3)] == [back, first, second]
    async with trio.open_nursery() as nursery:
        got = []

        async def getter():
            got.append(await q.get())

        nursery.start_soon(getter)
        await trio.testing.wait_all_tasks_blocked()
        q.release(back)
    assert got == [back]


def test_a_closed_queue_refuses_an_item_put_first():
    q = BatchQueue(1)
    q.close()
    with pytest.raises(ValueError):
        q.put_front_nowait(1)
