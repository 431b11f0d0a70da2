"""`kdc-trio chat URL "question" [--file F]… [--token T]`: one turn, printed as it streams.

stdout gets the turn as a person reads it: steps as `· title` lines when they happen, thinking
(dimmed on a terminal), the answer, the follow-ups. Exit status: 0 the turn completed,
1 it ended in `chat_error`, 2 the gateway refused the request (HTTP error), 3 the gateway could
not be reached, or the stream was lost for good or resumed with events missing (`stream.gap`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import trio

from kdc_trio.client.connection import Client, ClientError, Refused
from kdc_trio.client.events import Delta, Error, Gap, Step, TurnEvent

EXIT_OK, EXIT_CHAT_ERROR, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3
DIM, RESET = "\x1b[2m", "\x1b[0m"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("chat", help="send one message to a gateway and print the answer as it streams")
    p.add_argument("url", help="the gateway, e.g. http://127.0.0.1:8010")
    p.add_argument("question")
    p.add_argument("--file", action="append", default=[], help="attach a file (repeatable)")
    p.add_argument("--token", help="access token (Bearer); anonymous without one")
    p.add_argument("--id-token", help="ID token")
    p.add_argument("--tenant")
    p.add_argument("--project")


class Printer:
    """Renders events as lines and streams; `color` dims thinking."""

    def __init__(self, out: TextIO, *, color: bool) -> None:
        self.out = out
        self.color = color
        self.marker: str | None = None  # the text stream being written on the current line

    def _line(self, text: str) -> None:
        if self.marker is not None:
            self.out.write("\n")
            self.marker = None
        self.out.write(text + "\n")

    def _stream(self, marker: str, text: str) -> None:
        if self.marker != marker:
            if self.marker is not None:
                self.out.write("\n")
            self.marker = marker
        self.out.write(f"{DIM}{text}{RESET}" if self.color and marker == "thinking" and text else text)

    def event(self, ev: TurnEvent) -> None:
        if isinstance(ev, Delta):
            if ev.marker in ("answer", "thinking"):
                self._stream(ev.marker, ev.text)
            elif ev.marker == "canvas" and ev.text:
                self._line(f"· canvas {ev.artifact_name or ''} ({ev.format or 'text'}, {len(ev.text)} chars)")
            elif ev.text:
                self._line(f"· {ev.text}")
        elif isinstance(ev, Step):
            self._line(self._step(ev))
        elif isinstance(ev, Error):
            self._line(f"error: {ev.error}")
        elif isinstance(ev, Gap):
            self._line(f"lost: events {ev.after_seq + 1}..{ev.first_seq - 1} were no longer held by the gateway")
        self.out.flush()

    @staticmethod
    def _step(ev: Step) -> str:
        if ev.type == "chat.followups":
            return "· follow-ups: " + " | ".join(str(i) for i in ev.data.get("items") or ())
        head = f"· {ev.title or ev.step}" + (f" ({ev.status})" if ev.status else "")
        files = ev.data.get("attachments")
        if isinstance(files, list) and files:
            head += "".join(f"\n    {a.get('filename')} {a.get('size')} B sha256 {a.get('sha256')}"
                            for a in files if isinstance(a, dict))
        return head

    def end(self) -> None:
        if self.marker is not None:
            self.out.write("\n")
            self.marker = None
        self.out.flush()


async def chat(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    printer = Printer(out, color=out.isatty())
    try:
        async with Client(args.url, token=args.token, id_token=args.id_token, tenant=args.tenant,
                          project=args.project) as client:
            turn = await client.send(args.question, files=args.file)
            status = EXIT_OK
            async for ev in turn:
                printer.event(ev)
                if isinstance(ev, Error):
                    status = EXIT_CHAT_ERROR
                elif isinstance(ev, Gap):
                    status = EXIT_UNREACHABLE
            printer.end()
            return status
    except Refused as exc:
        printer.end()
        print(f"kdc-trio chat: refused: {exc}", file=err)
        return EXIT_REFUSED
    except ClientError as exc:  # ConnectionLost, ProtocolError
        printer.end()
        print(f"kdc-trio chat: {exc}", file=err)
        return EXIT_UNREACHABLE
    except OSError as exc:  # a --file that cannot be read
        print(f"kdc-trio chat: {exc}", file=err)
        return EXIT_REFUSED


def run(args: argparse.Namespace) -> int:
    return trio.run(chat, args)
