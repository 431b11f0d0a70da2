"""util/soon.py: callbacks run once the tasks running now have yielded, in one task."""

import logging

import trio
import trio.testing

from kdc_trio.util.soon import Soon


async def test_calls_run_after_the_caller_yields_all_in_one_batch():
    soon = Soon.shared()
    ran: list[str] = []
    assert soon.call(lambda: ran.append("a")) and soon.call(lambda: ran.append("b"))
    assert ran == []  # not in the caller's own call
    before = soon.batches
    await trio.testing.wait_all_tasks_blocked()
    assert ran == ["a", "b"] and soon.batches == before + 1


async def test_calls_made_by_several_tasks_in_one_batch_share_a_wake_up():
    soon = Soon.shared()
    ran: list[int] = []
    await trio.testing.wait_all_tasks_blocked()
    before = soon.batches
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(lambda i=i: _call_then_return(soon, ran, i))
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(ran) == [0, 1, 2, 3, 4] and soon.batches == before + 1


async def _call_then_return(soon: Soon, ran: list[int], i: int) -> None:
    soon.call(lambda: ran.append(i))


async def test_a_failing_call_is_logged_and_the_others_still_run(caplog):
    soon = Soon.shared()
    ran: list[int] = []
    soon.call(lambda: 1 / 0)
    soon.call(lambda: ran.append(1))
    with caplog.at_level(logging.ERROR, logger="kdc_trio.soon"):
        await trio.testing.wait_all_tasks_blocked()
    assert ran == [1] and "deferred call failed" in caplog.text


async def test_a_call_made_from_a_call_runs_in_the_next_batch():
    soon = Soon.shared()
    ran: list[str] = []
    soon.call(lambda: soon.call(lambda: ran.append("inner")) and ran.append("outer"))
    await trio.testing.wait_all_tasks_blocked()
    assert ran == ["outer", "inner"]


async def test_a_stopped_instance_refuses_and_what_was_queued_still_runs():
    soon = Soon()
    ran: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(soon.run)
        await trio.testing.wait_all_tasks_blocked()
        assert soon.call(lambda: ran.append(1))
        nursery.cancel_scope.cancel()
    assert ran == [1] and not soon.call(lambda: ran.append(2))


def test_outside_a_trio_run_there_is_none():
    assert Soon.shared() is None
