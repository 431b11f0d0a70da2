"""A Python client for kdc-trio gateways, usable from trio and asyncio (httpx + httpx-sse on anyio).

    from kdc_trio.client import Client

    async with Client("http://127.0.0.1:8010", token=None) as client:   # anonymous without a token
        turn = await client.send("hello", files=["report.pdf"])
        async for event in turn:                 # Start, Step, Delta, Complete, Error, Status
            if isinstance(event, Delta) and event.marker == "answer":
                print(event.text, end="")
        answer = await client.ask("and again")   # the assembled Answer (TurnFailed on chat_error)

A dropped stream is re-opened with `Last-Event-ID`: no event is lost or repeated.
"""

from kdc_trio.client.connection import (
    Client,
    ClientError,
    ConnectionLost,
    EventsLost,
    ProtocolError,
    Refused,
    SessionInfo,
    Turn,
    TurnFailed,
)
from kdc_trio.client.events import (
    Answer, Complete, Delta, Error, Event, Gap, Start, Status, Step, TurnEvent, decode,
)

__all__ = [
    "Answer", "Client", "ClientError", "Complete", "ConnectionLost", "Delta", "Error", "Event", "EventsLost", "Gap",
    "ProtocolError", "Refused", "SessionInfo", "Start", "Status", "Step", "Turn", "TurnEvent", "TurnFailed",
    "decode",
]
