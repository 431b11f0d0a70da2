"""AIBEmitters: the short form bundles use inside a turn — `await emit.delta(text=…, marker=…)`."""

from __future__ import annotations

from typing import Any

from kdc_trio.sdk.communicator import ChatCommunicator


class AIBEmitters:
    def __init__(self, communicator: ChatCommunicator, *, agent: str | None = None) -> None:
        self.comm = communicator
        self.agent = agent

    async def delta(self, *, text: str, index: int = 0, marker: str = "answer", agent: str | None = None,
                    completed: bool = False, **extra: Any) -> int | None:
        return await self.comm.delta(text=text, index=index, marker=marker, agent=agent or self.agent,
                                     completed=completed, **extra)

    async def step(self, *, step: str, status: str = "running", title: str | None = None,
                   data: dict | None = None, agent: str | None = None) -> int | None:
        return await self.comm.step(step=step, status=status, title=title, data=data, agent=agent or self.agent)

    async def event(self, *, type: str, data: dict | None = None, **extra: Any) -> int | None:
        return await self.comm.event(type=type, data=data, agent=extra.pop("agent", self.agent), **extra)
