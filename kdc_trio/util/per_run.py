"""One instance per trio run of a class whose `run()` serves the whole process (util/timers.py's
timer, util/soon.py's deferred calls): made on first use, its `run()` a system task that lives
as long as the run; `running` is True from the moment it is made (callers queue at once)."""

from __future__ import annotations

import trio


class PerRun:
    __slots__ = ()
    _by_run: "dict[object, PerRun]"
    running: bool

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._by_run = {}

    @classmethod
    def _of_run(cls, token: object, name: str):
        """This run's instance (`token`: the run's trio token), started when first asked for."""
        inst = cls._by_run.get(token)
        if inst is None:
            inst = cls._by_run[token] = cls()
            inst.running = True  # callers queue at once; run() serves them when it starts
            trio.lowlevel.spawn_system_task(inst._run_shared, token, name=name)
        return inst

    async def _run_shared(self, token: object) -> None:
        try:
            await self.run()  # type: ignore[attr-defined]
        finally:
            type(self)._by_run.pop(token, None)
